#!/usr/bin/env bash
# Multi-GPU testing on one node with torchrun:
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py flags...]
# Without a GPU, GPUS processes run on the CPU (gloo backend).
# PYTHON selects the interpreter (default: python on PATH).
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHONPATH="$HERE/..:${PYTHONPATH:-}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
