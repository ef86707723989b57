#!/usr/bin/env bash
# A multi-process genrl_jax job on a Cloud TPU VM pod slice: the same command on every worker.
#
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/walker.py --workdir=/mnt/shared/walker
#
# Every argument after the TPU name and zone goes to experiments/main.py, with
# --distributed=jax: JAX reads the worker's id, the worker count and the coordinator (worker
# 0) from the TPU VM metadata. The repository and its .venv must be at $GENRL_DIR (default
# ~/genrl_jax) on every worker (e.g. `gcloud compute tpus tpu-vm scp --worker=all`), and the
# workdir on a filesystem all workers share. Output of all workers comes back prefixed by
# gcloud; GENRL_PROJECT selects a project other than gcloud's default.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TPU_NAME ZONE [experiments/main.py arguments]" >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
dir=${GENRL_DIR:-'~/genrl_jax'}
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" ${GENRL_PROJECT:+--project="$GENRL_PROJECT"} \
  --worker=all \
  --command="cd $dir && .venv/bin/python -u experiments/main.py --distributed=jax $args"
