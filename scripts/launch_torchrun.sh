#!/usr/bin/env bash
# FSDP2 training with torchrun, on one node or several: run this script once on every node.
#
#   # node 0 (its address is MASTER_ADDR)           # node 1
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 \      NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 \
#     scripts/launch_torchrun.sh --config my.yaml      scripts/launch_torchrun.sh --config my.yaml
#
# Arguments are those of `lit-align fit`; the config (or the arguments) choose the strategy, e.g.
# `--trainer.strategy=fsdp2` or `trainer.strategy.class_path: lit_align.distributed.FSDP2Strategy`.
#
# Fields that must match the launch (FSDP2Strategy checks them at start-up against torchrun's
# WORLD_SIZE / LOCAL_WORLD_SIZE and names the flag to fix):
#   --trainer.devices   = NPROC_PER_NODE (processes per node, one per GPU)
#   --trainer.num_nodes = NNODES
# This script appends both after your arguments, so a YAML cannot contradict them.
#
# Environment (defaults in brackets):
#   NNODES [1], NODE_RANK [0], NPROC_PER_NODE [GPUs seen by nvidia-smi, else 1],
#   MASTER_ADDR [127.0.0.1]: address of node 0, reachable from every node; MASTER_PORT [29500].
#   RDZV_ENDPOINT: host:port of a c10d rendezvous instead of the static MASTER_ADDR/NODE_RANK
#   one (node ranks are then assigned by the rendezvous; set RDZV_ID to a per-job id).
set -euo pipefail

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l || true)
NPROC_PER_NODE=${NPROC_PER_NODE:-$(( GPUS > 0 ? GPUS : 1 ))}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}

if [[ -n "${RDZV_ENDPOINT:-}" ]]; then
  rendezvous=(--rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-lit-align}")
else
  rendezvous=(--node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT")
fi

exec torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE" "${rendezvous[@]}" \
  -m lit_align.cli fit "$@" \
  --trainer.devices="$NPROC_PER_NODE" --trainer.num_nodes="$NNODES"
