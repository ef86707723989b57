#!/usr/bin/env bash
# Runs scripts/accelerator_check.py (docs/benchmarks.md) on a machine whose Python has JAX
# but not every package the project needs: wheels carried in .whl/ (ml_collections, and
# grain with array_record and portpicker for the input pipeline) are installed into
# /tmp/site first, without touching that Python.
#   bash scripts/accelerator_check.sh OUT [--smoke] [--seconds=N]
# PYTHON picks the interpreter (default: python3).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/accelerator_check.sh OUT [--smoke] [--seconds=N]" >&2
  exit 2
fi
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$python" scripts/accelerator_check.py "$@"
