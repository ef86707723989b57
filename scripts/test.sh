#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# Under tcmalloc, as the main job runs (genrl_jax/host_allocator.py): XLA on CPU then
# reuses freed memory instead of page-faulting it in again every step.
exports=$(.venv/bin/python -m genrl_jax.host_allocator) || exit 1
eval "$exports"
# Test files are spread over up to 4 worker processes (one per core), each file whole in
# one worker, so module fixtures are built once.
.venv/bin/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile "$@" tests
status=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [ $status -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit $status
