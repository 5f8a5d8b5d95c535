#!/usr/bin/env bash
# Runs one medjax job on a Cloud TPU VM slice: one JAX process per TPU VM worker, joined
# by jax.distributed (medjax.main --distributed=on; JAX finds the workers through the TPU
# metadata server).
#
#   launch/tpu_vm.sh --name=NAME --zone=ZONE --accelerator_type=TYPE [options] -- <medjax.main args>
#   launch/tpu_vm.sh --name=mj --zone=us-central2-b --accelerator_type=v4-32 --bucket=my-bkt \
#       -- --config=configs/irma_cnn.py:variant=C --workdir=/home/$USER/my-bkt/irma_C
#
# Steps, in order (--steps picks a subset, e.g. --steps=copy,run on a VM kept with --keep):
#   create   gcloud compute tpus tpu-vm create (--spot for a preemptible slice)
#   copy     the working tree (without .git) as a tarball to every worker (scp --worker=all)
#   install  this package at the locked versions, and jax[tpu] at the locked jax version
#            (launch/install.sh tpu), on every worker; with --bucket, gcsfuse too
#   run      python -m medjax.main on every worker at once (ssh --worker=all); the output
#            of all workers streams here (only worker 0 logs at INFO) and is also kept
#            in ~/medjax_run.log on each worker
#   delete   the slice when the script ends, whatever the outcome, unless --keep
# The workdir (checkpoints: every worker reads them on resume) and the TFDS folder must be
# storage every worker sees: --bucket=B mounts gs://B at ~/B on every worker with gcsfuse;
# point --workdir, MEDJAX_DATA_DIR and MEDJAX_TFDS_DIR (pass them with --env) under it.
#
# Options: --project=P, --version=RUNTIME (default tpu-ubuntu2204-base; v5e: v2-alpha-tpuv5-lite,
# v6e: v2-alpha-tpuv6e), --spot, --bucket=B, --env=KEY=VALUE (repeatable; exported for the
# run), --keep, --dry-run (print every command instead of running it).
set -euo pipefail

usage() {
  echo "usage: $0 --name=NAME --zone=ZONE --accelerator_type=TYPE [--project=P] [--version=V]" \
       "[--spot] [--bucket=B] [--env=K=V ...] [--steps=create,copy,install,run,delete] [--keep]" \
       "[--dry-run] -- <medjax.main args>" >&2
  exit 2
}

name="" zone="" accelerator="" project="" version="tpu-ubuntu2204-base" spot=0 bucket=""
steps="create,copy,install,run,delete" keep=0 dry=0 envs=()
while [[ $# -gt 0 && $1 != "--" ]]; do
  case $1 in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --accelerator_type=*) accelerator=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --bucket=*) bucket=${1#*=} ;;
    --env=*) envs+=("${1#*=}") ;;
    --steps=*) steps=${1#*=} ;;
    --keep) keep=1 ;;
    --dry-run) dry=1 ;;
    *) usage ;;
  esac
  shift
done
[[ $# -gt 0 && -n $name && -n $zone ]] || usage
shift  # the "--"
[[ $steps != *create* || -n $accelerator ]] || usage

# Words as a shell reads them back: plain ones bare, the others single-quoted.
quote() {
  local out=() w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then out+=("$w"); else out+=("${w@Q}"); fi
  done
  echo "${out[*]}"
}
# Prints the command (--dry-run) or runs it.
run() {
  if ((dry)); then quote "$@"; else "$@"; fi
}
wants() { [[ ,$steps, == *,$1,* ]]; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tarball="/tmp/medjax-$name.tar.gz"
tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -z $project ]] || where+=(--project="$project")

# The remote job: environment, then medjax.main with the args quoted for the remote shell.
job="cd ~/medjax &&"
for kv in "${envs[@]}"; do job+=" export $(quote "$kv") &&"; done
job+=" python3 -m medjax.main --distributed=on $(quote "$@") 2>&1 | tee -a ~/medjax_run.log"

# The locked versions (requirements.lock), then jax[tpu] at the locked jax version.
install="cd ~/medjax && bash launch/install.sh tpu"
if [[ -n $bucket ]]; then
  # gcsfuse from Google's apt repository (Cloud Storage FUSE install guide); directory
  # renames, which Orbax commits checkpoints with, need --rename-dir-limit.
  install+=" && echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list"
  install+=" && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null"
  install+=" && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse && mkdir -p ~/$bucket"
  install+=" && (mountpoint -q ~/$bucket || gcsfuse --implicit-dirs --rename-dir-limit=100000 $bucket ~/$bucket)"
fi

if wants create; then
  create=("${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator"
          --version="$version")
  ((spot)) && create+=(--spot)
  run "${create[@]}"
fi
# From here on a failure anywhere still deletes the slice (it bills while it exists).
if wants delete && ((!keep)); then
  trap 'run "${tpu[@]}" delete "$name" "${where[@]}" --quiet' EXIT
fi
if wants copy; then
  run tar -czf "$tarball" -C "$repo" --exclude=.git --exclude=workdirs --exclude=__pycache__ .
  run "${tpu[@]}" scp "$tarball" "$name:medjax.tar.gz" --worker=all "${where[@]}"
  run "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" \
      --command="rm -rf ~/medjax && mkdir -p ~/medjax && tar -xzf ~/medjax.tar.gz -C ~/medjax"
fi
if wants install; then
  run "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command="$install"
fi
if wants run; then
  run "${tpu[@]}" ssh "$name" --worker=all "${where[@]}" --command="set -o pipefail; $job"
fi
