#!/usr/bin/env bash
# One pass over everything that needs a GPU, in about eight minutes on one H100/H200-class GPU:
#   1. tests/test_cuda.py: features and logits vs the reference fixtures on CUDA, fp16 training with a
#      GradScaler and resume, bf16 training, NCCL/DDP through torchrun, `jasper infer` CUDA vs CPU;
#   2. scripts/train_benchmark.sh: jasper10x5dr training throughput, AMP, batch 32 and 64;
#   3. scripts/inference_benchmark.sh: FP32 vs FP16 latency tables;
#   4. benchmarks/foundation.py --device cuda: GEMM yardsticks, batched vs per-utterance features,
#      jasper10x5dr forward in fp32 (TF32) and fp16;
#   5. train_benchmark.sh without AMP (TF32) at batch 32, for the mixed-precision speed-up.
# Each stage has its own time limit and a failure does not stop the next one. Results go to
# OUTPUT_DIR ($1, default results/gpu_check): gpu_check.log and the benchmarks' JSON and PNG files.
#
#   bash scripts/gpu_check.sh [OUTPUT_DIR]
#   TRAIN_STEPS=300 bash scripts/gpu_check.sh       # longer training runs (default 150 steps)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTPUT_DIR=${1:-$REPO/results/gpu_check}
: "${TRAIN_STEPS:=150}" "${TRAIN_WARMUP_STEPS:=20}" "${INFER_STEPS:=100}" "${NUM_WORKERS:=12}"
if [[ -n ${JASPER_PYTHON:-} ]]; then PYTHON=$JASPER_PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python
else PYTHON=python3
fi
export JASPER_PYTHON=$PYTHON PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUTPUT_DIR"
WORK=$(mktemp -d)
LOG=$OUTPUT_DIR/gpu_check.log
: >"$LOG"

stage() { # stage NAME SECONDS COMMAND...: run with a time limit, log everything, report the status
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "===== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "===== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

stage environment 30 bash -c "nvidia-smi; \"$PYTHON\" -c 'import torch, sys; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version()); \
print(torch.cuda.get_device_name(), torch.cuda.get_device_capability())'; nproc; free -g"

stage test_cuda 180 "$PYTHON" -m pytest -v -p no:cacheprovider "$REPO/tests/test_cuda.py"

# Synthetic 16.7 s utterances (the longest LibriSpeech training length; LibriSpeech's mean is ~12.3 s,
# so these sequences/s are a lower bound for real data), looped over epochs.
stage synthetic_data 60 "$PYTHON" -m jasper.cli train-benchmark data --output_dir "$WORK/synthetic" \
  --utterances "${SYNTHETIC_UTTERANCES:-2048}" --duration "${MAX_DURATION:-16.7}"
# No pre-allocation: every synthetic batch has the same shape, and warming 33 lengths costs minutes.
train_benchmark() { # train_benchmark AMP BATCH_SIZES STEPS TAG
  AMP=$1 BATCH_SIZE_SEQ=$2 NUM_STEPS=$3 WARMUP_STEPS=$TRAIN_WARMUP_STEPS NUM_GPUS_SEQ=1 PRE_ALLOCATE= \
    NUM_WORKERS=$NUM_WORKERS EPOCHS_THIS_JOB=1000 DATA_DIR=$WORK/synthetic \
    TRAIN_MANIFESTS=$WORK/synthetic/train.json VAL_MANIFESTS=$WORK/synthetic/val.json \
    OUTPUT_DIR=$WORK/train_$4 bash "$REPO/scripts/train_benchmark.sh"
}
collect_train() { # the table, and each run's last lines (step times, waits), also after a time-out
  local f
  cp "$WORK/train_$1/train_benchmark.json" "$OUTPUT_DIR/train_benchmark_$1.json" 2>/dev/null
  cp "$WORK/train_$1/train_benchmark.png" "$OUTPUT_DIR/train_benchmark_$1.png" 2>/dev/null
  for f in "$WORK/train_$1"/*.out; do
    [[ -f $f ]] && { echo "----- $f (last 25 lines)"; tail -n 25 "$f"; } >>"$LOG"
  done
}
export -f train_benchmark
export REPO WORK OUTPUT_DIR NUM_WORKERS TRAIN_WARMUP_STEPS
stage train_benchmark_amp 240 bash -c "train_benchmark true '32 64' $TRAIN_STEPS amp"
collect_train amp

stage inference_benchmark 100 env AMP=true NUM_STEPS="$INFER_STEPS" NUM_WARMUP_STEPS=10 \
  OUTPUT_DIR="$WORK/infer" bash "$REPO/scripts/inference_benchmark.sh"
cp "$WORK/infer/infer_benchmark.json" "$WORK/infer/infer_benchmark.png" "$OUTPUT_DIR/" 2>/dev/null

stage foundation 60 "$PYTHON" "$REPO/benchmarks/foundation.py" --device cuda --json "$OUTPUT_DIR/foundation.json"

stage train_benchmark_tf32 100 bash -c "train_benchmark false 32 $((TRAIN_STEPS / 2)) tf32"
collect_train tf32

rm -rf "$WORK"
echo "results in $OUTPUT_DIR" | tee -a "$LOG"
