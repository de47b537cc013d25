#!/usr/bin/env bash
# The GPU checks in one run: the `cuda` tests (tower and detector on CUDA against the CPU in float32,
# float16 and bfloat16, AMP training steps, the app on cuda, DDP on NCCL with two GPUs), then the
# benchmarks, and one table of what passed and how long each took.
#
#     benchmarks/gpu_check.sh            # from the repository root, on a machine with CUDA
#     benchmarks/gpu_check.sh --quick    # tests only
set -u
cd "$(dirname "$0")/.."
LOG=${GPU_CHECK_LOG:-runs/gpu_check}
mkdir -p "$LOG"
rows=()

run() {  # name, command...
  local name=$1; shift
  local start=$(date +%s)
  if "$@" >"$LOG/$name.log" 2>&1; then status=ok; else status="FAILED (rc $?)"; fi
  local secs=$(( $(date +%s) - start ))
  local last=$(grep -v '^\s*$' "$LOG/$name.log" | tail -n 1 | cut -c1-90)
  rows+=("| $name | $status | $secs | $last |")
}

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "CUDA is not available: nothing to check (the cuda tests skip)"; exit 1; }
python -c "import torch; print('GPU:', ', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())), '| torch', torch.__version__)"

run cuda-tests python -m pytest -q -m cuda tests/gpu -p no:cacheprovider
if [ "${1:-}" != "--quick" ]; then
  run bench-tower python -m benchmarks.tower
  run bench-train-step python -m benchmarks.train_step
  run bench-detector python -m benchmarks.detector
fi

echo
echo "| check | status | seconds | last line of its log ($LOG/<check>.log) |"
echo "| --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
