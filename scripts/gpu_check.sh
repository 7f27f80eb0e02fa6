#!/usr/bin/env bash
# One pass over everything that needs a GPU, at most eight minutes on one H100/H200-class GPU:
#   1. tests/test_cuda.py: features and logits vs the reference fixtures on CUDA, fp16 training with a
#      GradScaler and resume, bf16 training, NCCL/DDP through torchrun, `jasper infer` CUDA vs CPU,
#      CUDA graphs and torch.compile vs eager;
#   2. scripts/train_benchmark.sh: jasper10x5dr training throughput, AMP, batch 32 and 64;
#   3. scripts/inference_benchmark.sh: FP32 (TF32 convolutions, PyTorch's default) and FP16 latency;
#   4. train_benchmark.sh without AMP (TF32) at batch 32, for the mixed-precision speed-up;
#   5. last, so that a time-out costs only them: inference latency eager vs torch.compile vs CUDA
#      graphs (FP16 and TF32), and AMP training at batch 64 with --compile.
# Each stage has its own time limit, capped by what is left of TOTAL_SECONDS (480); a failure or a
# time-out does not stop the next stage, and every stage's output stays in the log. Results go to
# OUTPUT_DIR ($1, default results/gpu_check): gpu_check.log and the benchmarks' JSON and PNG files.
#
#   bash scripts/gpu_check.sh [OUTPUT_DIR]
#   TRAIN_STEPS=300 bash scripts/gpu_check.sh       # longer training runs (default 120 steps)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTPUT_DIR=${1:-$REPO/results/gpu_check}
: "${TRAIN_STEPS:=120}" "${TRAIN_WARMUP_STEPS:=20}" "${INFER_STEPS:=100}" "${NUM_WORKERS:=12}"
: "${TOTAL_SECONDS:=480}"
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

stage() { # stage NAME SECONDS COMMAND...: run with a time limit (capped by the time left), log everything
  local name=$1 limit=$2 start=$SECONDS rc left=$((TOTAL_SECONDS - SECONDS))
  shift 2
  if ((left < 15)); then
    echo "===== $name: skipped, ${left}s of the ${TOTAL_SECONDS}s left" | tee -a "$LOG"
    return
  fi
  ((limit > left - 5)) && limit=$((left - 5))
  echo "===== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout --signal=TERM --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "===== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

stage environment 20 bash -c "nvidia-smi; \"$PYTHON\" -c 'import torch, sys; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version()); \
print(torch.cuda.get_device_name(), torch.cuda.get_device_capability())'; nproc; free -g"

stage test_cuda 150 "$PYTHON" -m pytest -v -p no:cacheprovider "$REPO/tests/test_cuda.py"

# Synthetic 16.7 s utterances (the longest LibriSpeech training length; LibriSpeech's mean is ~12.3 s,
# so these sequences/s are a lower bound for real data), looped over epochs.
stage synthetic_data 40 "$PYTHON" -m jasper.cli train-benchmark data --output_dir "$WORK/synthetic" \
  --utterances "${SYNTHETIC_UTTERANCES:-2048}" --duration "${MAX_DURATION:-16.7}"
# No pre-allocation: every synthetic batch has the same shape, and warming 33 lengths costs minutes.
train_benchmark() { # train_benchmark AMP BATCH_SIZES STEPS TAG [COMPILE]
  AMP=$1 BATCH_SIZE_SEQ=$2 NUM_STEPS=$3 WARMUP_STEPS=$TRAIN_WARMUP_STEPS NUM_GPUS_SEQ=1 PRE_ALLOCATE= \
    NUM_WORKERS=$NUM_WORKERS EPOCHS_THIS_JOB=1000 DATA_DIR=$WORK/synthetic COMPILE=${5:-false} \
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
export REPO WORK OUTPUT_DIR NUM_WORKERS TRAIN_WARMUP_STEPS INFER_STEPS
stage train_benchmark_amp 150 bash -c "train_benchmark true '32 64' $TRAIN_STEPS amp"
collect_train amp

infer_benchmark() { # infer_benchmark TAG [VAR=VALUE...]: the seed's latency table shapes, FP32 and FP16
  local tag=$1
  shift
  env AMP=true NUM_STEPS="$INFER_STEPS" NUM_WARMUP_STEPS=10 BATCH_SIZE_SEQ="1 8 16" MAX_DURATION_SEQ="2 7" \
    "$@" OUTPUT_DIR="$WORK/infer_$tag" bash "$REPO/scripts/inference_benchmark.sh"
}
export -f infer_benchmark
stage inference_benchmark 60 bash -c "infer_benchmark eager"
cp "$WORK/infer_eager/infer_benchmark.json" "$OUTPUT_DIR/infer_benchmark.json" 2>/dev/null
cp "$WORK/infer_eager/infer_benchmark.png" "$OUTPUT_DIR/infer_benchmark.png" 2>/dev/null

stage train_benchmark_tf32 60 bash -c "train_benchmark false 32 $((TRAIN_STEPS / 2)) tf32"
collect_train tf32

# Last: compiles take minutes, and a time-out here loses nothing above.
# CUDA-graph rows come before compile rows, and each row prints as it ends, so a time-out in the
# compiles still leaves the CUDA-graph latencies in the log.
stage inference_compile_graphs 100 bash -c \
  "infer_benchmark graphs BATCH_SIZE_SEQ='1 8' MAX_DURATION_SEQ=2 COMPILE=true CUDA_GRAPHS=true"
cp "$WORK/infer_graphs/infer_benchmark.json" "$OUTPUT_DIR/infer_benchmark_graphs.json" 2>/dev/null
stage train_benchmark_amp_compile 60 bash -c "train_benchmark true 64 $((TRAIN_STEPS / 2)) compile true"
collect_train compile

rm -rf "$WORK"
echo "results in $OUTPUT_DIR (${SECONDS}s)" | tee -a "$LOG"
