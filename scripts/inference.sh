#!/usr/bin/env bash
# Evaluate a checkpoint on a LibriSpeech subset (WER, predictions, logits), as the reference's
# scripts/inference.sh does, with the same variables:
#
#   bash scripts/inference.sh [DATA_DIR [MODEL_CONFIG [OUTPUT_DIR [CHECKPOINT]]]] [-- extra args]
#   DATASET=dev-clean NUM_GPUS=2 bash scripts/inference.sh /data/LibriSpeech
#   MANIFESTS="/data/a.json /data/b.json" CPU=true bash scripts/inference.sh /data
#
# A variable set in the environment wins over the positional argument in its place. Arguments
# from the first one that starts with "-" on are passed to `jasper infer` unchanged.
#
# DATA_DIR ($1)      /datasets/LibriSpeech   --dataset_dir
# MODEL_CONFIG ($2)  configs/jasper10x5dr_speedp-online_speca.yaml
# OUTPUT_DIR ($3)    /results
# CHECKPOINT ($4)    /checkpoints/jasper_fp16.pt; set but empty (or "" as $4): random weights
# DATASET            test-other              manifest $DATA_DIR/librispeech-$DATASET-wav.json
# MANIFESTS          ""                      explicit manifest paths (space separated); override DATASET
# PREDICTION_FILE    $OUTPUT_DIR/$DATASET.predictions ("" = none): `<utterance id><TAB><text>` lines
# LOGITS_FILE        ""                      per-utterance log-probs (.npz for numpy, else torch.save)
# LOG_FILE           ""                      JSON lines log (default $OUTPUT_DIR/nvlog_infer.json)
# NUM_GPUS           1                       processes; > 1 launches torchrun (gloo on CPU)
# BATCH_SIZE 64, NUM_STEPS 0, NUM_WARMUP_STEPS 0, PAD_LEADING 16, SEED 0, AMP false, EMA true,
# PRECISION ""  (fp32, bf16, fp16 on CUDA, or int8 on CPU; "" = fp32, or fp16 with AMP),
# ENGINE torch (or onnxruntime: the acoustic model in ONNX Runtime on the CPU, fp32 or int8),
# CPU false, CUDNN_BENCHMARK false, COMPILE false (--compile), DALI_DEVICE gpu (accepted, unused), MAX_DURATION "",
# PAD_TO_MAX_DURATION false (both override the input_val sections of the config)
# DECODER            greedy                  or beam: CTC beam search, with LM (a `jasper lm build` dir)
# LM, BEAM_WIDTH 64, ALPHA, BETA             beam search settings (ALPHA/BETA default: the LM's tuned.json)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# shellcheck source=scripts/positional.sh
source "$REPO/scripts/positional.sh" "$@"

: "${DATA_DIR:=${positional[0]:-/datasets/LibriSpeech}}"
: "${MODEL_CONFIG:=${positional[1]:-$REPO/configs/jasper10x5dr_speedp-online_speca.yaml}}"
: "${OUTPUT_DIR:=${positional[2]:-/results}}"
: "${CHECKPOINT=${positional[3]-/checkpoints/jasper_fp16.pt}}"
: "${DATASET:=test-other}"
: "${MANIFESTS:=}"
: "${LOG_FILE:=}"
: "${CUDNN_BENCHMARK:=false}"
: "${MAX_DURATION:=}"
: "${PAD_TO_MAX_DURATION:=false}"
: "${PAD_LEADING:=16}"
: "${NUM_GPUS:=1}"
: "${NUM_STEPS:=0}"
: "${NUM_WARMUP_STEPS:=0}"
: "${AMP:=false}"
: "${BATCH_SIZE:=64}"
: "${EMA:=true}"
: "${SEED:=0}"
: "${DALI_DEVICE:=gpu}"
: "${CPU:=false}"
: "${LOGITS_FILE:=}"
: "${DECODER:=greedy}"
: "${LM:=}"
: "${BEAM_WIDTH:=64}"
: "${ALPHA:=}"
: "${BETA:=}"

if [[ -n $MANIFESTS ]]; then
  read -r -a manifests <<<"$MANIFESTS"
  default_name=$(basename "${manifests[0]}" .json)
else
  manifests=("$DATA_DIR/librispeech-$DATASET-wav.json")
  default_name=$DATASET
fi
# Unset: the default file; set but empty (evaluation.sh): no predictions file.
: "${PREDICTION_FILE=$OUTPUT_DIR/$default_name.predictions}"

case $DECODER in
  greedy | beam) ;;
  *)
    echo "inference.sh: DECODER=$DECODER is not one of greedy, beam" >&2
    exit 2
    ;;
esac

if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

args=(
  --dataset_dir "$DATA_DIR"
  --val_manifests "${manifests[@]}"
  --model_config "$MODEL_CONFIG"
  --output_dir "$OUTPUT_DIR"
  --batch_size "$BATCH_SIZE"
  --steps "$NUM_STEPS"
  --warmup_steps "$NUM_WARMUP_STEPS"
  --pad_leading "$PAD_LEADING"
  --seed "$SEED"
  --dali_device "$DALI_DEVICE"
)
[[ -n $CHECKPOINT ]] && args+=(--ckpt "$CHECKPOINT")
[[ -n $LOG_FILE ]] && args+=(--log_file "$LOG_FILE")
[[ -n $PREDICTION_FILE ]] && args+=(--save_predictions "$PREDICTION_FILE")
[[ -n $LOGITS_FILE ]] && args+=(--save_logits "$LOGITS_FILE")
if [[ $DECODER == beam ]]; then
  args+=(--decoder beam --beam_width "$BEAM_WIDTH")
  [[ -n $LM ]] && args+=(--lm "$LM")
  [[ -n $ALPHA ]] && args+=(--alpha "$ALPHA")
  [[ -n $BETA ]] && args+=(--beta "$BETA")
fi
[[ $AMP == true ]] && args+=(--amp)
[[ -n ${PRECISION:-} ]] && args+=(--precision "$PRECISION")
[[ -n ${ENGINE:-} ]] && args+=(--engine "$ENGINE")
[[ $EMA == true ]] && args+=(--ema)
[[ $CPU == true ]] && args+=(--cpu)
[[ $CUDNN_BENCHMARK == true ]] && args+=(--cudnn_benchmark)
[[ ${COMPILE:-false} == true ]] && args+=(--compile)
if [[ -n $MAX_DURATION ]]; then
  args+=(--override_config "input_val.audio_dataset.max_duration=$MAX_DURATION"
    --override_config "input_val.filterbank_features.max_duration=$MAX_DURATION")
fi
if [[ $PAD_TO_MAX_DURATION == true ]]; then
  args+=(--override_config input_val.audio_dataset.pad_to_max_duration=True
    --override_config input_val.filterbank_features.pad_to_max_duration=True)
fi

mkdir -p "$OUTPUT_DIR"
if ((NUM_GPUS > 1)); then
  launch=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NUM_GPUS" -m jasper.cli)
else
  launch=("$PYTHON" -m jasper.cli)
fi
set -x
exec "${launch[@]}" infer "${args[@]}" ${extra[@]+"${extra[@]}"}
