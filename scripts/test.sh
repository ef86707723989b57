#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite. Extra arguments go to pytest.
#   bash scripts/test.sh           every test (what CI runs)
#   bash scripts/test.sh --fast    the fast tier: leaves out the tests marked `slow`
#                                  (pipelines, multi-host, subprocess runs, tests over ~10 s)
set -uo pipefail
cd "$(dirname "$0")/.."
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then args+=(-m "not slow"); else args+=("$a"); fi
done
bash scripts/setup.sh || exit 1
# Under tcmalloc, as the main job runs (genrl_jax/host_allocator.py): XLA on CPU then
# reuses freed memory instead of page-faulting it in again every step.
exports=$(.venv/bin/python -m genrl_jax.host_allocator) || exit 1
eval "$exports"
# One persistent XLA compilation cache for this run's test processes (pytest workers and the
# jobs they start): a program that several test files, or a test and its subprocess,
# compile (the same micro MFWM, the same eager ops) is compiled once. Fresh per run, so a
# run's time does not depend on earlier runs; removed at the end.
cache_dir=$(mktemp -d "${TMPDIR:-/tmp}/genrl_jax_test_xla_cache.XXXXXX") || exit 1
trap 'rm -rf "$cache_dir"' EXIT
export JAX_COMPILATION_CACHE_DIR="$cache_dir"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1
# Test files are spread over up to 4 worker processes (one per core), each file whole in
# one worker, so module fixtures are built once.
.venv/bin/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile ${args[@]+"${args[@]}"} tests
status=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [ $status -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit $status
