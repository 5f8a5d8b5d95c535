#!/usr/bin/env bash
# Runs one medjax job as NPROC JAX processes on this machine (CPU), joined through a
# coordinator on 127.0.0.1: the multi-process code paths of a pod slice or a GPU cluster,
# testable on a laptop.
#
#   launch/local.sh NPROC [--port=PORT] -- <medjax.main args>
#   launch/local.sh 2 -- --config=configs/irma_cnn.py:smoke,dataset=chest_xray --workdir=W
#
# Each process gets its own --process_id and the same --coordinator_address; its output
# is prefixed "[p<id>] ". If one process fails or is killed, the others are killed too
# (SIGKILL: without their peer they can only hang in a collective until JAX's heartbeat
# timeout, and SIGTERM did not stop them in our runs; checkpoints are written atomically,
# so nothing is lost but the steps since the last one). The exit status is 0
# only if every process exited 0; running the same command again resumes from the last
# checkpoint. Environment: PYTHON (default python).
set -uo pipefail

usage() { echo "usage: $0 NPROC [--port=PORT] -- <medjax.main args>" >&2; exit 2; }

[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
nproc=$1; shift
port=""
while [[ $# -gt 0 && $1 != "--" ]]; do
  case $1 in
    --port=*) port=${1#--port=} ;;
    *) usage ;;
  esac
  shift
done
[[ $# -gt 0 ]] || usage
shift  # the "--"

python=${PYTHON:-python}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -z $port ]]; then
  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}
trap 'echo "[local.sh] interrupted: stopping all processes" >&2; stop_all; exit 130' INT TERM

echo "[local.sh] $nproc processes, coordinator 127.0.0.1:$port" >&2
for ((i = 0; i < nproc; i++)); do
  "$python" -m medjax.main --coordinator_address="127.0.0.1:$port" --num_processes="$nproc" \
      --process_id="$i" "$@" > >(sed -u "s/^/[p$i] /") 2> >(sed -u "s/^/[p$i] /" >&2) &
  pids+=("$!")
done

# Polls rather than `wait -n`: bash forgets jobs it has reported killed, and then
# `wait -n` on them fails; `wait PID` still returns a finished child's status.
status=0
left=$nproc
declare -A finished=()
while ((left > 0)); do
  for pid in "${pids[@]}"; do
    [[ -z ${finished[$pid]:-} ]] && ! kill -0 "$pid" 2>/dev/null || continue
    wait "$pid"
    rc=$?
    finished[$pid]=1
    left=$((left - 1))
    if ((rc != 0 && status == 0)); then
      status=$rc
      echo "[local.sh] process pid $pid exited with status $rc: stopping the others" >&2
      stop_all
    fi
  done
  ((left == 0)) || sleep 0.2
done
exit "$status"
