# Sourced by inference.sh and inference_benchmark.sh with their arguments: the reference's calling
# convention of up to four positional arguments (DATA_DIR MODEL_CONFIG OUTPUT_DIR CHECKPOINT), then
# extra `jasper` options, optionally after `--`. Sets the arrays `positional` and `extra`.
positional=()
while (($#)) && [[ $1 != -* ]] && ((${#positional[@]} < 4)); do
  positional+=("$1")
  shift
done
[[ ${1:-} == -- ]] && shift
extra=("$@")
