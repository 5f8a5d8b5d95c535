#!/usr/bin/env bash
# Submits one medjax job to a SLURM GPU cluster: an sbatch script whose srun step starts
# the JAX processes on every node; jax.distributed finds its coordinator, process count
# and ids in SLURM's environment (medjax.main joins automatically inside an srun step
# of several tasks).
#
#   launch/slurm_gpu.sh --nodes=N --gpus_per_node=G [options] -- <medjax.main args>
#   launch/slurm_gpu.sh --nodes=2 --gpus_per_node=8 --partition=gpu --time=12:00:00 \
#       -- --config=configs/irma_cnn.py:variant=C --workdir=/shared/medjax/irma_C
#
# --tasks decides how processes map onto GPUs:
#   per_gpu   (default) N*G processes, one per GPU: JAX gives each process the GPU of its
#             local rank (SLURM_LOCALID). The usual choice; a dead GPU kills one task.
#   per_node  N processes, each driving all G GPUs of its node (MEDJAX_LOCAL_DEVICE_IDS
#             is set to 0..G-1): fewer processes, one input pipeline per node.
# The global batch (config.batch_size) must divide by the number of processes and GPUs.
# The workdir and MEDJAX_TFDS_DIR must be on the cluster's shared filesystem: every
# process reads the checkpoints on resume, and process 0 prepares the TFDS records
# while the others wait for them.
#
# Options: --partition=P, --account=A, --qos=Q, --time=HH:MM:SS (default 04:00:00),
# --cpus_per_task=C (default 8), --job_name=NAME (default medjax), --logs=DIR (default
# slurm_logs; one file per job), --python=PY (default python3, e.g. a venv's),
# --env=KEY=VALUE (repeatable; exported in the job), --dry-run (print the batch script and
# the sbatch command instead of submitting), --cuda=cuda12|cuda13 (default cuda12),
# --no_install. Before the run, the job installs medjax at the locked versions with that
# CUDA jaxlib (launch/install.sh) into --python's environment, once, on the first node: the
# environment must be on the shared filesystem, like the repo (--no_install skips it).
set -euo pipefail

usage() {
  echo "usage: $0 --nodes=N --gpus_per_node=G [--tasks=per_gpu|per_node] [--partition=P]" \
       "[--account=A] [--qos=Q] [--time=T] [--cpus_per_task=C] [--job_name=NAME] [--logs=DIR]" \
       "[--python=PY] [--cuda=cuda12|cuda13] [--no_install] [--env=K=V ...] [--dry-run]" \
       "-- <medjax.main args>" >&2
  exit 2
}

nodes="" gpus="" tasks="per_gpu" partition="" account="" qos="" time_limit="04:00:00"
cpus=8 job_name="medjax" logs="slurm_logs" python="python3" dry=0 envs=() cuda="cuda12"
install=1
while [[ $# -gt 0 && $1 != "--" ]]; do
  case $1 in
    --nodes=*) nodes=${1#*=} ;;
    --gpus_per_node=*) gpus=${1#*=} ;;
    --tasks=*) tasks=${1#*=} ;;
    --partition=*) partition=${1#*=} ;;
    --account=*) account=${1#*=} ;;
    --qos=*) qos=${1#*=} ;;
    --time=*) time_limit=${1#*=} ;;
    --cpus_per_task=*) cpus=${1#*=} ;;
    --job_name=*) job_name=${1#*=} ;;
    --logs=*) logs=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --cuda=*) cuda=${1#*=} ;;
    --no_install) install=0 ;;
    --env=*) envs+=("${1#*=}") ;;
    --dry-run) dry=1 ;;
    *) usage ;;
  esac
  shift
done
[[ $# -gt 0 && $nodes =~ ^[1-9][0-9]*$ && $gpus =~ ^[1-9][0-9]*$ ]] || usage
[[ $tasks == per_gpu || $tasks == per_node ]] || usage
[[ $cuda == cuda12 || $cuda == cuda13 ]] || usage
shift  # the "--"

# Words as a shell reads them back: plain ones bare, the others single-quoted.
quote() {
  local out=() w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then out+=("$w"); else out+=("${w@Q}"); fi
  done
  echo "${out[*]}"
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $tasks == per_gpu ]]; then
  tasks_per_node=$gpus
else
  tasks_per_node=1
  envs+=("MEDJAX_DISTRIBUTED=on" "MEDJAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $((gpus - 1)))")
fi

script="#!/bin/bash
#SBATCH --job-name=$job_name
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=$tasks_per_node
#SBATCH --gpus-per-node=$gpus
#SBATCH --cpus-per-task=$cpus
#SBATCH --time=$time_limit
#SBATCH --output=$logs/%x-%j.out"
[[ -z $partition ]] || script+=$'\n'"#SBATCH --partition=$partition"
[[ -z $account ]] || script+=$'\n'"#SBATCH --account=$account"
[[ -z $qos ]] || script+=$'\n'"#SBATCH --qos=$qos"
script+="
set -euo pipefail
cd $(quote "$repo")
export PYTHONUNBUFFERED=1"
for kv in "${envs[@]}"; do script+=$'\n'"export $(quote "$kv")"; done
((install)) && script+=$'\n'"PYTHON=$(quote "$python") bash launch/install.sh $cuda"
# --kill-on-bad-exit: one failed task ends the step (the others would hang in collectives).
script+="
srun --kill-on-bad-exit=1 --label $(quote "$python") -m medjax.main $(quote "$@")
"

submit=(sbatch "$logs/$job_name.sbatch")
if ((dry)); then
  echo "# $logs/$job_name.sbatch"
  echo "$script"
  echo "# submit:"
  quote "${submit[@]}"
else
  mkdir -p "$logs"
  echo "$script" > "$logs/$job_name.sbatch"
  "${submit[@]}"
fi
