#!/usr/bin/env bash
# Export a checkpoint for deployment and write its Triton model repository, like the reference's
# triton/scripts/export_model.sh (same variable names where they mean the same thing):
#
#   CHECKPOINT_PATH=/checkpoints/jasper.pt bash scripts/export_model.sh [-- extra triton-repo args]
#
# MODEL_CONFIG        configs/jasper10x5dr_speedp-online_speca.yaml (masked, unlike the reference's
#                     nomask config: a padded batch then decodes like its utterances alone)
# CHECKPOINT_PATH     (required) checkpoint to export
# EMA                 true        export the EMA weights when the checkpoint has them
# CONVERTS            "onnx torchscript"   formats written to EXPORT_DIR
# CONVERT_PRECISIONS  "fp16 fp32"          acoustic-model precisions written to EXPORT_DIR
# EXPORT_DIR          triton/exported
# MODEL_REPO          triton/model_repo    Triton repository ("" = do not write one)
# FLAVOUR             cpu          cpu: all on the Python backend (jasper serve); gpu: onnxruntime on GPU
# PRECISION           fp32         acoustic-model precision in the repository
# MAX_BATCH 8, MAX_QUEUE_DELAY_US 5000, MAX_DURATION "" (seconds; "" = the config's, else 35)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ ${1:-} == -- ]] && shift

: "${MODEL_CONFIG:=$REPO/configs/jasper10x5dr_speedp-online_speca.yaml}"
: "${CHECKPOINT_PATH:?set CHECKPOINT_PATH to the checkpoint to export}"
: "${EMA:=true}" "${CONVERTS:=onnx torchscript}" "${CONVERT_PRECISIONS:=fp16 fp32}"
: "${EXPORT_DIR:=triton/exported}" "${MODEL_REPO=triton/model_repo}" "${FLAVOUR:=cpu}" "${PRECISION:=fp32}"
: "${MAX_BATCH:=8}" "${MAX_QUEUE_DELAY_US:=5000}" "${MAX_DURATION:=}"
JASPER=${JASPER:-$REPO/.venv/bin/jasper}

common=(--model_config "$MODEL_CONFIG" --ckpt "$CHECKPOINT_PATH")
[[ $EMA == true ]] && common+=(--ema)

"$JASPER" export "${common[@]}" --output_dir "$EXPORT_DIR" \
  --format "$(echo $CONVERTS | tr ' ' ',')" --precision "$(echo $CONVERT_PRECISIONS | tr ' ' ',')"

if [[ -n $MODEL_REPO ]]; then
  repo_args=(--out "$MODEL_REPO" --flavour "$FLAVOUR" --precision "$PRECISION"
    --max_batch_size "$MAX_BATCH" --max_queue_delay_us "$MAX_QUEUE_DELAY_US")
  [[ -n $MAX_DURATION ]] && repo_args+=(--max_duration "$MAX_DURATION")
  "$JASPER" triton-repo "${common[@]}" "${repo_args[@]}" "$@"
fi
