#!/usr/bin/env bash
# Run jaxdfl on a Cloud TPU slice from your own machine (which needs gcloud, logged in to a project with TPU quota).
#
#   export TPU_NAME=jaxdfl ZONE=europe-west4-b ACCELERATOR_TYPE=v5litepod-16 RUNTIME_VERSION=v2-alpha-tpuv5-lite
#   bash tpu/pod.sh create                      # the slice (one VM per host)
#   bash tpu/pod.sh install                     # this checkout and jax[tpu] on every host
#   bash tpu/pod.sh run runs/pod quickstart --set num_devices=4096   # the same command on every host
#   bash tpu/pod.sh fetch runs/pod              # process 0's output folder back to ./runs/pod
#   bash tpu/pod.sh delete                      # stop paying
#
# `run` starts `jaxdfl run CONFIG --out DIR ...` on all hosts at once with JAXDFL_DISTRIBUTED=1: each calls
# jax.distributed.initialize() (on Cloud TPU it finds its peers itself), the device axis spreads over every
# chip of the slice, process 0 writes DIR's files, and every host writes its part of the checkpoints under
# DIR/checkpoints. DIR must therefore be one folder every host sees (a gcsfuse mount of a bucket, or NFS,
# at the same path on each host); `fetch` then copies it from host 0. Untested on a real slice: see README.md.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }
case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE}" --version="${RUNTIME_VERSION:?set RUNTIME_VERSION}" ;;
  install)
    here="$(cd "$(dirname "$0")/.." && pwd)"
    tar -C "$here" --exclude=.git --exclude=.venv --exclude=runs --exclude='experiments/results' -czf /tmp/jaxdfl.tgz .
    gcloud compute tpus tpu-vm scp /tmp/jaxdfl.tgz "$TPU_NAME":~/jaxdfl.tgz --zone="$ZONE" --worker=all
    ssh_all "rm -rf ~/jaxdfl && mkdir ~/jaxdfl && tar -C ~/jaxdfl -xzf ~/jaxdfl.tgz && \
      python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip && ~/venv/bin/pip install -q 'jax[tpu]' -e ~/jaxdfl && \
      ~/venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'" ;;
  run)
    out="${2:?give the output folder}"; shift 2
    ssh_all "cd ~/jaxdfl && JAXDFL_DISTRIBUTED=1 ~/venv/bin/jaxdfl run $* --out $out --no-progress" ;;
  fetch)
    out="${2:?give the output folder}"; mkdir -p "$(dirname "$out")"
    gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME":~/jaxdfl/"$out" "$(dirname "$out")" --zone="$ZONE" --worker=0 ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet ;;
  *)
    sed -n '2,15p' "$0"; exit 2 ;;
esac
