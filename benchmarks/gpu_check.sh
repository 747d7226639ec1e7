#!/usr/bin/env bash
# The CUDA tier on a GPU machine, in one go (about 5 minutes on one GPU): the `cuda` tests
# (bf16 and fp16 + GradScaler steps with exact resume, channels_last, cudnn.benchmark,
# torch.compile, the GPU benchmark's quick mode), then the GPU benchmark at 256x256, then one
# summary. Run from the repository root with the project's environment active:
#     bash benchmarks/gpu_check.sh            # or: GPU_CHECK_STEPS=30 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
steps=${GPU_CHECK_STEPS:-20}
out=$(mktemp -d)
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| cuda', torch.version.cuda)" || exit 1
"$PY" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}
"$PY" benchmarks/gpu_speed.py --size 256 --batches 1 16 --steps "$steps" --warmup 5 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}
echo
echo "== gpu check summary"
echo "cuda tests: $(grep -E '^[0-9]+ (passed|failed)|passed|failed' "$out/tests.log" | tail -1) (exit $tests_rc)"
grep -E '^ +(textbook|ours)' "$out/bench.log" | sed 's/^/benchmark: /'
echo "benchmark exit $bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
