#!/bin/bash
# Train the creative agent on one node with 4 A100 GPUs (DDP, one task per GPU) for up to 48 h.
#
#   mkdir -p logs && sbatch submit_creative_agent.sh
#   DATA=/scratch/pairs EPOCHS=100 sbatch submit_creative_agent.sh          # overrides
#   sbatch --account=ACCOUNT --partition=gpu --nodes=2 submit_creative_agent.sh   # multi-node
#   EXTRA_ARGS="--compile true --num_workers 8" sbatch submit_creative_agent.sh
#
# sbatch options on the command line override the #SBATCH lines (account, partition, mail, GPU
# type: e.g. --gres=gpu:4 where GPUs carry no type name). The log directory must exist before
# sbatch starts the job, hence `mkdir -p logs`.
#
# Time limit and requeue: 120 s before the limit SLURM sends SIGUSR1 to every task; the tasks
# finish their current step, rank 0 writes checkpoint_last.pth and runs `scontrol requeue`, and the
# requeued job continues from it (--resume auto). scancel (SIGTERM) also saves, but does not
# requeue.
#
# Without srun (or with LAUNCH=local) the script emulates srun on this machine: it starts
# SLURM_NTASKS copies of the same command with SLURM_PROCID/SLURM_LOCALID set, so the training
# code takes exactly the path it takes under SLURM (used by tests/test_submit_script.py).
#
#SBATCH --job-name=creative_agent
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:a100:4
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=logs/creative_agent_%j.out
#SBATCH --error=logs/creative_agent_%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@120

set -uo pipefail

# ---- configuration (the seed's run; every value overridable from the environment)
PYTHON=${PYTHON:-python}
DATA=${DATA:-data/pairs}
CKPT_DIR=${CKPT_DIR:-checkpoints_creative_agent}
EPOCHS=${EPOCHS:-200}
BATCH_SIZE=${BATCH_SIZE:-8}               # per GPU: 32 in total on 4 GPUs
LR=${LR:-1e-4}
MASK_REG_WEIGHT=${MASK_REG_WEIGHT:-0.1}
ANTI_CHEATING=${ANTI_CHEATING:-0.1}
NUM_TRANSFORMER_LAYERS=${NUM_TRANSFORMER_LAYERS:-3}
NUM_WORKERS=${NUM_WORKERS:-4}
EXTRA_ARGS=${EXTRA_ARGS:-}
LAUNCH=${LAUNCH:-auto}                    # auto | srun | local
# DRY_RUN=1 prints the command and exits.
export REQUEUE=${REQUEUE:-1}              # 0: save on SIGUSR1 but do not requeue

# sbatch runs a copy of this script from its spool folder, so find the code via the submit dir.
CODE_DIR=$(dirname "$0")
if [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -f "$SLURM_SUBMIT_DIR/train_simple_ddp.py" ]; then
    CODE_DIR=$SLURM_SUBMIT_DIR
fi
# One thread per task for the CPU side (data, logging); the GPU does the work.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

ARGS=("$CODE_DIR/train_simple_ddp.py"
      --dataset_folder "$DATA"
      --checkpoint_dir "$CKPT_DIR"
      --epochs "$EPOCHS"
      --batch_size "$BATCH_SIZE"
      --lr "$LR"
      --num_transformer_layers "$NUM_TRANSFORMER_LAYERS"
      --use_creative_agent true
      --mask_reg_weight "$MASK_REG_WEIGHT"
      --shuffle_targets false
      --anti_cheating "$ANTI_CHEATING"
      --num_workers "$NUM_WORKERS"
      --resume auto
      --requeue "$REQUEUE")
if [ -n "$EXTRA_ARGS" ]; then
    read -r -a EXTRA <<< "$EXTRA_ARGS"
    ARGS+=("${EXTRA[@]}")
fi

echo "[submit] job ${SLURM_JOB_ID:-none} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-$(hostname)}}: ${SLURM_NTASKS:-1} task(s)"
echo "[submit] $PYTHON ${ARGS[*]}"
if [ -n "${DRY_RUN:-}" ]; then
    exit 0
fi
mkdir -p logs "$CKPT_DIR"

if [ "$LAUNCH" = srun ] || { [ "$LAUNCH" = auto ] && command -v srun > /dev/null && [ -n "${SLURM_JOB_ID:-}" ]; }; then
    # One task per GPU; a task that fails takes the whole step down.
    srun --kill-on-bad-exit=1 "$PYTHON" "${ARGS[@]}"
    exit $?
fi

# ---- no srun: emulate it with local processes (same environment variables as srun sets)
NTASKS=${SLURM_NTASKS:-1}
echo "[submit] srun not used (LAUNCH=$LAUNCH, srun $(command -v srun > /dev/null && echo found || echo absent)): running $NTASKS local task(s)"
export SLURM_NTASKS=$NTASKS
export SLURM_JOB_ID=${SLURM_JOB_ID:-$$}
export SLURM_NODELIST=${SLURM_NODELIST:-localhost}
PIDS=()
for ((i = 0; i < NTASKS; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i "$PYTHON" "${ARGS[@]}" &
    PIDS+=($!)
done
forward() { kill -s "$1" "${PIDS[@]}" 2> /dev/null; }
trap 'forward TERM' TERM INT
trap 'forward USR1' USR1

STATUS=0
LEFT=$NTASKS
while [ "$LEFT" -gt 0 ]; do
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        [ -z "$pid" ] && continue
        kill -0 "$pid" 2> /dev/null && continue
        wait "$pid"
        rc=$?
        PIDS[$i]=""
        LEFT=$((LEFT - 1))
        if [ "$rc" -ne 0 ] && [ "$STATUS" -eq 0 ]; then
            STATUS=$rc
            echo "[submit] task $i exited with status $rc: stopping the others (as srun --kill-on-bad-exit)"
            forward TERM
            ( sleep 10; forward KILL ) &
        fi
    done
    [ "$LEFT" -gt 0 ] && sleep 0.5
done
exit "$STATUS"
