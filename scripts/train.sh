#!/usr/bin/env bash
# Train Jasper: the reference's scripts/train.sh (same variables, defaults and fixed flags) on
# GPUs, or on CPU processes when there is no GPU.
#
#   bash scripts/train.sh [DATA_DIR [MODEL_CONFIG [OUTPUT_DIR [CHECKPOINT [jasper train args...]]]]]
#   NUM_GPUS=8 AMP=true BATCH_SIZE=64 GRAD_ACCUMULATION_STEPS=1 bash scripts/train.sh
#   NUM_GPUS=2 bash scripts/train.sh                       # CPU-only machine: 2 gloo processes
#   NUM_NODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash scripts/train.sh   # then NODE_RANK=1 on node1
#   EXTRA_ARGS="--time_limit_minutes 30" bash scripts/train.sh /data configs/jasper5x3_cpu.yaml /out
#
# An environment variable wins over the positional argument in its place (the reference's
# `: ${VAR:=${1:-default}}`); arguments after the fourth, then $EXTRA_ARGS, are passed to
# `jasper train` last, so they can override anything set here. Variables (reference defaults):
#   DATA_DIR=/datasets/LibriSpeech  MODEL_CONFIG=configs/jasper10x5dr_speedp-online_speca.yaml
#   OUTPUT_DIR=/results  CHECKPOINT= (--ckpt: initial weights when nothing is resumed)
#   RESUME=true  CUDNN_BENCHMARK=true  AMP=false  SEED=0  COMPILE=false (ours: --compile, torch.compile)
#   NUM_GPUS=8: processes per node. Capped at the GPUs present; on a CPU-only machine it is the number
#     of CPU (gloo) processes, default 1. More than 1 (or NUM_NODES > 1) launches torchrun.
#   BATCH_SIZE=64 (per process per update)  GRAD_ACCUMULATION_STEPS=2
#   LEARNING_RATE=0.01  MIN_LEARNING_RATE=0.00001  LR_POLICY=exponential  LR_EXP_GAMMA=0.981  EMA=0.999
#   EPOCHS=440  WARMUP_EPOCHS=2  HOLD_EPOCHS=140  SAVE_FREQUENCY=10  EPOCHS_THIS_JOB=0
#   DALI_DEVICE=gpu (accepted; DALI is not used, jasper train says so)
#   PAD_TO_MAX_DURATION=false  MAX_DURATION= (training max duration, seconds)
#   EVAL_FREQUENCY=544  PREDICTION_FREQUENCY=544
#   TRAIN_MANIFESTS="$DATA_DIR/librispeech-train-{clean-100,clean-360,other-500}-wav.json"
#   VAL_MANIFESTS=$DATA_DIR/librispeech-dev-clean-wav.json  LOG_FILE= (default OUTPUT_DIR/nvlog.json)
#   PRE_ALLOCATE= ("MIN MAX" frames)
#   Multi-node: NUM_NODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500, or
#     RDZV_ENDPOINT=host:port (c10d rendezvous, elastic) with RDZV_ID=jasper
#   OMP_NUM_THREADS: 1 with GPUs (reference); CPU-only: cores / NUM_GPUS, unless set
#   JASPER_PYTHON: the interpreter (default: the repo's .venv, else python3)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

: "${DATA_DIR:=${1:-/datasets/LibriSpeech}}"
: "${MODEL_CONFIG:=${2:-configs/jasper10x5dr_speedp-online_speca.yaml}}"
: "${OUTPUT_DIR:=${3:-/results}}"
: "${CHECKPOINT:=${4:-}}"
shift $(($# < 4 ? $# : 4))
: "${RESUME:=true}"
: "${CUDNN_BENCHMARK:=true}"
num_gpus_given=${NUM_GPUS:-}
: "${NUM_GPUS:=8}"
: "${AMP:=false}"
: "${COMPILE:=false}"
: "${BATCH_SIZE:=64}"
: "${GRAD_ACCUMULATION_STEPS:=2}"
: "${LEARNING_RATE:=0.01}"
: "${MIN_LEARNING_RATE:=0.00001}"
: "${LR_POLICY:=exponential}"
: "${LR_EXP_GAMMA:=0.981}"
: "${EMA:=0.999}"
: "${SEED:=0}"
: "${EPOCHS:=440}"
: "${WARMUP_EPOCHS:=2}"
: "${HOLD_EPOCHS:=140}"
: "${SAVE_FREQUENCY:=10}"
: "${EPOCHS_THIS_JOB:=0}"
: "${DALI_DEVICE:=gpu}"
: "${PAD_TO_MAX_DURATION:=false}"
: "${EVAL_FREQUENCY:=544}"
: "${PREDICTION_FREQUENCY:=544}"
: "${TRAIN_MANIFESTS:=$DATA_DIR/librispeech-train-clean-100-wav.json $DATA_DIR/librispeech-train-clean-360-wav.json $DATA_DIR/librispeech-train-other-500-wav.json}"
: "${VAL_MANIFESTS:=$DATA_DIR/librispeech-dev-clean-wav.json}"
: "${NUM_NODES:=1}"
: "${NODE_RANK:=0}"
: "${EXTRA_ARGS:=}"

# GPUs this process may use (CUDA_VISIBLE_DEVICES narrows them).
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  if [[ -n ${CUDA_VISIBLE_DEVICES+x} ]]; then
    visible=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c . || true)
    gpus=$((visible < gpus ? visible : gpus))
  fi
fi
if ((gpus > 0)); then
  if ((NUM_GPUS > gpus)); then
    echo "train.sh: NUM_GPUS=$NUM_GPUS but $gpus GPU(s) are visible: using $gpus" >&2
    NUM_GPUS=$gpus
  fi
  : "${OMP_NUM_THREADS:=1}"
else
  NUM_GPUS=${num_gpus_given:-1} # the default 8 means GPUs; CPU-only, one process unless asked
  : "${OMP_NUM_THREADS:=$(($(nproc) / NUM_GPUS > 0 ? $(nproc) / NUM_GPUS : 1))}"
fi
export OMP_NUM_THREADS

# The reference ran from the repo root: a relative config path that is not here is the repo's.
if [[ $MODEL_CONFIG != /* && ! -e $MODEL_CONFIG && -e $REPO/$MODEL_CONFIG ]]; then
  MODEL_CONFIG=$REPO/$MODEL_CONFIG
fi

read -ra train_manifests <<<"$TRAIN_MANIFESTS"
read -ra val_manifests <<<"$VAL_MANIFESTS"
read -ra extra <<<"$EXTRA_ARGS"
args=(
  --dataset_dir="$DATA_DIR"
  --val_manifests "${val_manifests[@]}"
  --train_manifests "${train_manifests[@]}"
  --model_config="$MODEL_CONFIG"
  --output_dir="$OUTPUT_DIR"
  --lr="$LEARNING_RATE"
  --batch_size="$BATCH_SIZE"
  --epochs="$EPOCHS"
  --warmup_epochs="$WARMUP_EPOCHS"
  --hold_epochs="$HOLD_EPOCHS"
  --lr_policy="$LR_POLICY"
  --lr_exp_gamma="$LR_EXP_GAMMA"
  --save_frequency="$SAVE_FREQUENCY"
  --epochs_this_job="$EPOCHS_THIS_JOB"
  --ema="$EMA"
  --seed="$SEED"
  --optimizer=novograd
  --weight_decay=1e-3
  --min_lr="$MIN_LEARNING_RATE"
  --eval_frequency="$EVAL_FREQUENCY"
  --prediction_frequency="$PREDICTION_FREQUENCY"
  --grad_accumulation_steps="$GRAD_ACCUMULATION_STEPS"
  --dali_device="$DALI_DEVICE"
  --keep_milestones 100 200 300 400
  --save_best_from=380
  --log_frequency=1
)
[[ $AMP == true ]] && args+=(--amp)
[[ $COMPILE == true ]] && args+=(--compile)
[[ $RESUME == true ]] && args+=(--resume)
if [[ $CUDNN_BENCHMARK == true ]]; then args+=(--cudnn_benchmark); else args+=(--no-cudnn_benchmark); fi
[[ -n $CHECKPOINT ]] && args+=(--ckpt="$CHECKPOINT")
[[ -n ${LOG_FILE:-} ]] && args+=(--log_file="$LOG_FILE")
if [[ -n ${PRE_ALLOCATE:-} ]]; then
  read -ra range <<<"$PRE_ALLOCATE"
  args+=(--pre_allocate_range "${range[@]}")
fi
if [[ $PAD_TO_MAX_DURATION == true ]]; then
  args+=(--override_config input_train.audio_dataset.pad_to_max_duration=True)
  args+=(--override_config input_train.filterbank_features.pad_to_max_duration=True)
fi
if [[ -n ${MAX_DURATION:-} ]]; then
  args+=(--override_config "input_train.audio_dataset.max_duration=$MAX_DURATION")
  args+=(--override_config "input_train.filterbank_features.max_duration=$MAX_DURATION")
fi

launch=("$PYTHON")
if ((NUM_GPUS > 1 || NUM_NODES > 1)); then
  launch+=(-m torch.distributed.run --nproc_per_node="$NUM_GPUS" --nnodes="$NUM_NODES")
  if [[ -n ${RDZV_ENDPOINT:-} ]]; then
    launch+=(--rdzv_backend=c10d --rdzv_endpoint="$RDZV_ENDPOINT" --rdzv_id="${RDZV_ID:-jasper}")
  elif ((NUM_NODES > 1)) || [[ -n ${MASTER_ADDR:-} || -n ${MASTER_PORT:-} ]]; then
    launch+=(--node_rank="$NODE_RANK" --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}")
  else
    launch+=(--standalone) # one node: torchrun picks a free port
  fi
fi

mkdir -p "$OUTPUT_DIR"
cmd=("${launch[@]}" -m jasper.cli train "${args[@]}" "$@" ${extra[@]+"${extra[@]}"})
echo "train.sh: OMP_NUM_THREADS=$OMP_NUM_THREADS ${cmd[*]}" >&2
exec "${cmd[@]}"
