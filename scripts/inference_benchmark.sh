#!/usr/bin/env bash
# Inference latency over batch sizes x durations, in one process: prints the reference README's
# table (true 90/95/99th percentiles and the mean, ms per batch) for the acoustic model alone and
# end to end, and writes $OUTPUT_DIR/infer_benchmark.{json,png}.
#
#   bash scripts/inference_benchmark.sh [DATA_DIR [MODEL_CONFIG [OUTPUT_DIR [CHECKPOINT]]]] [-- extra args]
#   BATCH_SIZE_SEQ="1 2" MAX_DURATION_SEQ="2" NUM_STEPS=20 bash scripts/inference_benchmark.sh
#   AMP=true bash scripts/inference_benchmark.sh          # FP16 and FP32, with the FP16 speed-up
#   PRECISION_SEQ="fp32 bf16" CPU=true bash scripts/inference_benchmark.sh   # bf16 weights on CPU
#   ENGINE_SEQ="torch onnxruntime" PRECISION_SEQ="fp32 bf16 int8" CPU=true bash scripts/inference_benchmark.sh
#                                     # every CPU path: one table each, with its speed-up over fp32
#
# DATA_DIR ($1)       ""  synthetic audio of exactly each duration; set it to time real utterances
#                         from $DATA_DIR/librispeech-$DATASET-wav.json (or MANIFESTS), at most that long
# MODEL_CONFIG ($2)   configs/jasper10x5dr_speedp-online_speca.yaml
# OUTPUT_DIR ($3)     /results
# CHECKPOINT ($4)     ""  (random weights: latency does not depend on them)
# BATCH_SIZE_SEQ      "1 2 4 8 16"
# MAX_DURATION_SEQ    "2 7 16.7"  seconds
# NUM_STEPS           timed steps per row (default: 500 on CUDA, 20 on CPU)
# NUM_WARMUP_STEPS    untimed steps before them (default: 10 on CUDA, 3 on CPU)
# AMP                 false; true runs FP16 next to an FP32 baseline (PRECISION_SEQ chooses freely)
# PRECISION_SEQ       "fp32", or "fp32 fp16" when AMP=true; any of fp32, bf16, fp16 (CUDA only),
#                     int8 (CPU only)
# ENGINE_SEQ          "torch"; add onnxruntime for ONNX Runtime on the CPU (its fp32 and int8 only)
# COMPILE             false; true adds torch.compile rows (--compile) beside eager, per float precision
# CUDA_GRAPHS         false; true adds CUDA-graph rows (--cuda_graphs, batches up to 8; CUDA only)
# PAD_TO_MAX_DURATION true: features padded to the duration's fixed length (208/704/1680 frames)
# CUDNN_BENCHMARK     true
# CPU                 false; true times the CPU even when CUDA is available
# THREADS             ""  torch CPU threads (default: torch's choice)
# DATASET test-other, MANIFESTS "", EMA false, SEED 0
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# shellcheck source=scripts/positional.sh
source "$REPO/scripts/positional.sh" "$@"

: "${DATA_DIR:=${positional[0]:-}}"
: "${MODEL_CONFIG:=${positional[1]:-$REPO/configs/jasper10x5dr_speedp-online_speca.yaml}}"
: "${OUTPUT_DIR:=${positional[2]:-/results}}"
: "${CHECKPOINT:=${positional[3]:-}}"
: "${BATCH_SIZE_SEQ:=1 2 4 8 16}"
: "${MAX_DURATION_SEQ:=2 7 16.7}"
: "${NUM_STEPS:=}"
: "${NUM_WARMUP_STEPS:=}"
: "${AMP:=false}"
if [[ $AMP == true ]]; then : "${PRECISION_SEQ:=fp32 fp16}"; else : "${PRECISION_SEQ:=fp32}"; fi
: "${ENGINE_SEQ:=torch}"
: "${PAD_TO_MAX_DURATION:=true}"
: "${COMPILE:=false}"
: "${CUDA_GRAPHS:=false}"
: "${CUDNN_BENCHMARK:=true}"
: "${CPU:=false}"
: "${THREADS:=}"
: "${DATASET:=test-other}"
: "${MANIFESTS:=}"
: "${EMA:=false}"
: "${SEED:=0}"

if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

read -r -a batch_sizes <<<"$BATCH_SIZE_SEQ"
read -r -a durations <<<"$MAX_DURATION_SEQ"
read -r -a precisions <<<"$PRECISION_SEQ"
read -r -a engine_seq <<<"$ENGINE_SEQ"
args=(
  --model_config "$MODEL_CONFIG"
  --output_dir "$OUTPUT_DIR"
  --batch_sizes "${batch_sizes[@]}"
  --durations "${durations[@]}"
  --precisions "${precisions[@]}"
  --engines "${engine_seq[@]}"
  --seed "$SEED"
)
[[ -n $CHECKPOINT ]] && args+=(--ckpt "$CHECKPOINT")
[[ $EMA == true ]] && args+=(--ema)
[[ -n $NUM_STEPS ]] && args+=(--steps "$NUM_STEPS")
[[ -n $NUM_WARMUP_STEPS ]] && args+=(--warmup_steps "$NUM_WARMUP_STEPS")
[[ $PAD_TO_MAX_DURATION != true ]] && args+=(--no_pad_to_max_duration)
[[ $CUDNN_BENCHMARK == true ]] && args+=(--cudnn_benchmark)
[[ $COMPILE == true ]] && args+=(--compile)
[[ $CUDA_GRAPHS == true ]] && args+=(--cuda_graphs)
[[ $CPU == true ]] && args+=(--device cpu)
[[ -n $THREADS ]] && args+=(--threads "$THREADS")
if [[ -n $DATA_DIR ]]; then
  if [[ -n $MANIFESTS ]]; then read -r -a manifests <<<"$MANIFESTS"
  else manifests=("$DATA_DIR/librispeech-$DATASET-wav.json")
  fi
  args+=(--dataset_dir "$DATA_DIR" --val_manifests "${manifests[@]}")
fi

set -x
exec "$PYTHON" -m jasper.cli infer-benchmark "${args[@]}" ${extra[@]+"${extra[@]}"}
