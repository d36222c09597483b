#!/bin/bash
# Build a song store of a large corpus as a SLURM job array, then merge it.
#
#   mkdir -p logs
#   SONGS=/data/music OUT=/scratch/store sbatch --array=0-15 submit_build_store.sh
#   SONGS=/data/music OUT=/scratch/store sbatch --dependency=afterok:JOBID submit_build_store.sh
#
# Each array task builds the shards k with k % SLURM_ARRAY_TASK_COUNT == SLURM_ARRAY_TASK_ID
# (creative-prepare-pairs --layout store --shard I/N); every task computes the same plan from
# the sorted song list and the files' headers, so they need no lock and no coordination. A job
# outside an array (no SLURM_ARRAY_TASK_ID) runs the same command without --shard: it builds any
# shard still missing (a killed or failed task's) and merges the index, the songs manifest and
# the header. Rerunning either is safe: finished shards are kept, half-written ones rebuilt.
#
#SBATCH --job-name=build_store
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/build_store_%A_%a.out

set -euo pipefail

PYTHON=${PYTHON:-python}
SONGS=${SONGS:?set SONGS to the folder of songs}
OUT=${OUT:?set OUT to the store folder}
WINDOW_SECONDS=${WINDOW_SECONDS:-4.0}
PAIRING=${PAIRING:-both}
CODEC=${CODEC:-mdct}
EXTRA_ARGS=${EXTRA_ARGS:-}

args=(--layout store --songs "$SONGS" --out "$OUT" --segment_seconds "$WINDOW_SECONDS"
      --pairing "$PAIRING" --codec "$CODEC" --progress false)
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    count=${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT missing in an array task}
    # An array may start at any index (--array=1-16): number the tasks from its minimum.
    first=${SLURM_ARRAY_TASK_MIN:-0}
    args+=(--shard "$((SLURM_ARRAY_TASK_ID - first))/$count")
fi
# shellcheck disable=SC2086
exec "$PYTHON" -m songweave.data.prepare_cli "${args[@]}" $EXTRA_ARGS
