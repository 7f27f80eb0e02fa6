#!/usr/bin/env bash
# Training throughput for each process count and batch size (the reference's train_benchmark.sh),
# ending with NVIDIA's table (utterances/s, mixed-precision speedup, weak scaling), also saved as
# OUTPUT_DIR/train_benchmark.{json,png}.
#
#   bash scripts/train_benchmark.sh                                 # CPU: minutes; GPU: the 10x5 model
#   BATCH_SIZE_SEQ="2" NUM_GPUS_SEQ="1 2" bash scripts/train_benchmark.sh
#   AMP=both NUM_GPUS_SEQ="1 8" BATCH_SIZE_SEQ="32 64" bash scripts/train_benchmark.sh
#
# Without DATA_DIR the runs use synthetic data (noise, random transcripts, every utterance
# MAX_DURATION s long): throughput depends on shapes, not on words. With DATA_DIR they read
# TRAIN_MANIFESTS (default: train-clean-100) as the reference does. Each run trains NUM_STEPS
# updates (and at most EPOCHS_THIS_JOB epochs); the first WARMUP_STEPS are left out of the figures.
# Variables (GPU default / CPU-only default):
#   NUM_GPUS_SEQ ("1 4 8" / "1 2"; on CPU the numbers of gloo processes)  BATCH_SIZE_SEQ ("32" / "2")
#   AMP: false | true | both (false)   MODEL_CONFIG (configs/jasper10x5dr_speedp-online_train-benchmark.yaml
#   / configs/jasper5x3_cpu.yaml, a 3 M-parameter Jasper 5x3 that a laptop trains in seconds a step)
#   NUM_STEPS (60 / 12)  WARMUP_STEPS (10 / 3)  PAD_TO_MAX_DURATION (false)
#   MAX_DURATION: synthetic utterance length (16.7 / 4); when set, also the training max_duration
#   EPOCHS_THIS_JOB (2)  PRE_ALLOCATE ("1408 1920" / unset)  DALI_DEVICE (gpu: accepted, not used)
#   OUTPUT_DIR (results/train_benchmark)  DATA_DIR, TRAIN_MANIFESTS, VAL_MANIFESTS (synthetic)
#   NUM_WORKERS (2 / 0): loader workers per process (0: in-process)   COMPILE (false): true adds --compile (torch.compile)
#   SYNTHETIC_UTTERANCES: size of the synthetic training set (default: enough for NUM_STEPS in one
#     epoch; fewer loop over several epochs, which EPOCHS_THIS_JOB must then allow)
#   OMP_NUM_THREADS (CPU-only: cores / the largest process count, the same for every run, so that
#   weak scaling compares equal workers)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export JASPER_PYTHON=$PYTHON
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

max_duration_given=${MAX_DURATION:-}
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
if ((gpus > 0)); then
  : "${NUM_GPUS_SEQ:=1 4 8}" "${BATCH_SIZE_SEQ:=32}" "${NUM_STEPS:=60}" "${WARMUP_STEPS:=10}"
  : "${MAX_DURATION:=16.7}" "${NUM_WORKERS:=2}" "${PRE_ALLOCATE=1408 1920}"
  : "${MODEL_CONFIG:=configs/jasper10x5dr_speedp-online_train-benchmark.yaml}"
else
  : "${NUM_GPUS_SEQ:=1 2}" "${BATCH_SIZE_SEQ:=2}" "${NUM_STEPS:=12}" "${WARMUP_STEPS:=3}"
  : "${MAX_DURATION:=4}" "${NUM_WORKERS:=0}" "${PRE_ALLOCATE=}"
  : "${MODEL_CONFIG:=configs/jasper5x3_cpu.yaml}"
fi
: "${OUTPUT_DIR:=$REPO/results/train_benchmark}"
: "${AMP:=false}"
: "${EPOCHS_THIS_JOB:=2}"
: "${PAD_TO_MAX_DURATION:=false}"
: "${DALI_DEVICE:=gpu}"
mkdir -p "$OUTPUT_DIR"

max() { local m=0 v; for v in "$@"; do ((v > m)) && m=$v; done; echo "$m"; }
if ((gpus == 0)); then
  # Weak scaling compares equal workers: every run gets the threads of one process of the largest run.
  threads=$(($(nproc) / $(max $NUM_GPUS_SEQ)))
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((threads > 0 ? threads : 1))}
fi

if [[ -z ${DATA_DIR:-} ]]; then
  # Enough utterances that the largest global batch runs NUM_STEPS updates within one epoch.
  utts=${SYNTHETIC_UTTERANCES:-$(($(max $BATCH_SIZE_SEQ) * $(max $NUM_GPUS_SEQ) * NUM_STEPS))}
  DATA_DIR=$OUTPUT_DIR/synthetic
  "$PYTHON" -m jasper.cli train-benchmark data --output_dir "$DATA_DIR" --utterances "$utts" \
    --duration "$MAX_DURATION"
  : "${TRAIN_MANIFESTS:=$DATA_DIR/train.json}" "${VAL_MANIFESTS:=$DATA_DIR/val.json}"
else
  : "${TRAIN_MANIFESTS:=$DATA_DIR/librispeech-train-clean-100-wav.json}"
  : "${VAL_MANIFESTS:=$DATA_DIR/librispeech-dev-clean-wav.json}"
fi

if ((gpus > 0)); then # runs with more processes than GPUs would be mislabelled: drop them
  seq=""
  for n in $NUM_GPUS_SEQ; do
    if ((n <= gpus)); then seq+="$n "; else echo "train_benchmark.sh: skipping $n GPUs ($gpus present)" >&2; fi
  done
  NUM_GPUS_SEQ=$seq
fi

case $AMP in
  both) precisions="false true" ;;
  true | false) precisions=$AMP ;;
  *) echo "train_benchmark.sh: AMP must be true, false or both, not '$AMP'" >&2; exit 2 ;;
esac

logs=()
for amp in $precisions; do
  for num_gpus in $NUM_GPUS_SEQ; do
    for batch_size in $BATCH_SIZE_SEQ; do
      log=$OUTPUT_DIR/perf-train_dali-${DALI_DEVICE}_amp-${amp}_ngpus${num_gpus}_bs${batch_size}.json
      run_dir=$OUTPUT_DIR/run_amp-${amp}_ngpus${num_gpus}_bs${batch_size}
      rm -rf "$log" "$run_dir"
      echo "== $num_gpus process(es), batch $batch_size, AMP $amp: $NUM_STEPS steps" >&2
      DATA_DIR=$DATA_DIR MODEL_CONFIG=$MODEL_CONFIG OUTPUT_DIR=$run_dir LOG_FILE=$log \
        NUM_GPUS=$num_gpus BATCH_SIZE=$batch_size AMP=$amp GRAD_ACCUMULATION_STEPS=1 \
        TRAIN_MANIFESTS=$TRAIN_MANIFESTS VAL_MANIFESTS=$VAL_MANIFESTS RESUME=false \
        EPOCHS=100000 EPOCHS_THIS_JOB=$EPOCHS_THIS_JOB SAVE_FREQUENCY=100000 EVAL_FREQUENCY=100000 \
        PREDICTION_FREQUENCY=100000 EMA=0 DALI_DEVICE=$DALI_DEVICE PAD_TO_MAX_DURATION=$PAD_TO_MAX_DURATION \
        MAX_DURATION=$max_duration_given PRE_ALLOCATE=$PRE_ALLOCATE COMPILE=${COMPILE:-false} \
        EXTRA_ARGS="--stop_after_steps $NUM_STEPS --num_workers $NUM_WORKERS ${EXTRA_ARGS:-}" \
        bash "$REPO/scripts/train.sh" >"$run_dir.out" 2>&1 || {
        echo "train_benchmark.sh: the run failed; its output:" >&2
        tail -n 30 "$run_dir.out" >&2
        exit 1
      }
      logs+=("$log")
    done
  done
done

"$PYTHON" -m jasper.cli train-benchmark report --warmup_steps "$WARMUP_STEPS" --output_dir "$OUTPUT_DIR" "${logs[@]}"
