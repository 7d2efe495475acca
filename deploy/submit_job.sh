#!/usr/bin/env bash
# Submit an impala_frodo training run to a Ray cluster through the Ray Jobs API.
#
#   deploy/submit_job.sh [learner options...]
#   deploy/submit_job.sh --preset catch-frodo --num-actors 32 --logdir /runs
#
# It runs `ray job submit --working-dir <this checkout> -- python -m learner <options>`,
# leaving .git, the project venv and run directories out of the uploaded working directory.
# Without --logdir it adds `--logdir $IMPALA_FRODO_LOGDIR` (default /runs, the shared volume
# of docker-compose.yml): a relative logdir would land inside the job's temporary copy of
# the working directory on the head, which Ray deletes.
#
# Environment:
#   RAY_API_SERVER_ADDRESS  Jobs API address (default http://127.0.0.1:8265)
#   IMPALA_FRODO_LOGDIR     logdir added when none is given (default /runs)
#   PYTHON                  interpreter for the entrypoint on the head (default python)
#   SUBMISSION_ID           a submission id of your choice (default: Ray makes one)
#   ENTRYPOINT_NUM_CPUS     CPUs reserved for the driver, on any node that has them free (and
#                           its OMP_NUM_THREADS; without it, Ray runs the driver on the head
#                           with OMP_NUM_THREADS=1)
#   ENTRYPOINT_NUM_GPUS     GPUs reserved for the driver (see deploy/README.md, GPUs)
#   RAY_AUTH_MODE, RAY_AUTH_TOKEN   Ray token authentication, read by `ray job submit`
#   NO_WAIT=1               return after submitting instead of following the logs
#   DRY_RUN=1               print the command instead of running it
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
address="${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}"
python_bin="${PYTHON:-python}"

# excludes: gitignore-style patterns, relative to the working directory (Ray also honours
# .gitignore). RAY_JOB_STOP_WAIT_TIME_S: `ray job stop` sends SIGTERM, on which the learner
# writes a final checkpoint, then SIGKILL after this many seconds (Ray's default is 3).
runtime_env='{"excludes": [".git/", ".venv/", "runs/", "__pycache__/", ".pytest_cache/", ".ruff_cache/", ".benchmarks/"], "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60"}}'

learner_args=("$@")
has_logdir=0
for arg in "${learner_args[@]}"; do
    case "$arg" in
        --logdir | --logdir=*) has_logdir=1 ;;
    esac
done
if [[ "$has_logdir" == 0 ]]; then
    learner_args+=(--logdir "${IMPALA_FRODO_LOGDIR:-/runs}")
fi

cmd=(ray job submit --address "$address" --working-dir "$repo_root" --runtime-env-json "$runtime_env")
if [[ -n "${ENTRYPOINT_NUM_CPUS:-}" ]]; then
    cmd+=(--entrypoint-num-cpus "$ENTRYPOINT_NUM_CPUS")
fi
if [[ -n "${ENTRYPOINT_NUM_GPUS:-}" ]]; then
    cmd+=(--entrypoint-num-gpus "$ENTRYPOINT_NUM_GPUS")
fi
if [[ -n "${SUBMISSION_ID:-}" ]]; then
    cmd+=(--submission-id "$SUBMISSION_ID")
fi
if [[ "${NO_WAIT:-0}" == 1 ]]; then
    cmd+=(--no-wait)
fi
cmd+=(-- "$python_bin" -m learner "${learner_args[@]}")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi
exec "${cmd[@]}"
