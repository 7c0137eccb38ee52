#!/usr/bin/env bash
# scripts/gpu_check.sh [OUT]: everything this project checks on an NVIDIA GPU without TensorRT, in one go.
#
#   1. the GPU tests (tests/test_cuda_buffers.py, tests/test_nvrtc.py; the gpu-marked ones must run, not skip)
#   2. python -m benchmarks.gpu_kernels (letterbox kernel vs cv2, checked against the CPU before timing)
#   3. python -m benchmarks.verify (pinned vs pageable H2D bandwidth; the engine steps say what is missing)
#   4. compute-sanitizer memcheck over the GPU tests (memory errors only: cuda-bindings probes driver entry
#      points that this driver lacks, which memcheck would count as API errors), where it exists and runs
#
# Needs: python3 with numpy, opencv, onnx, onnxruntime, pytest, pyyaml, cuda-bindings and the NVRTC library
# (pip install -e .[cuda,dev] gives them). Writes env.txt, gpu_tests.log, gpu_kernels.{md,json},
# verify/verify-report.{md,json} and sanitizer.log into OUT (default: $OUT, else gpu-check/).
# Exit status: 1 when a test failed (or a GPU test skipped), or the kernel benchmark failed; else 0.
set -u
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 YOLO_OFFLINE=1
status=0

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  grep -m1 "model name" /proc/cpuinfo; nproc
  "$py" -c 'import platform; print("python", platform.python_version())'
  "$py" -m pip list 2>/dev/null | grep -i -E "^(cuda-\S+|cupy\S*|nvidia-cuda-nvrtc\S*|numpy|opencv\S*|onnx|onnxruntime|pytest)\s"
  git rev-parse --short=10 HEAD 2>/dev/null || echo "commit: unknown (no git here)"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== 1. GPU tests"
tests=(tests/test_cuda_buffers.py tests/test_nvrtc.py)
"$py" -m pytest -p no:cacheprovider -v -rA -m gpu "${tests[@]}" 2>&1 | tee "$out/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$py" -m pytest -p no:cacheprovider -q -m "not gpu" "${tests[@]}" >"$out/cpu_tests.log" 2>&1 || status=1
grep -E "^(FAILED|ERROR)|^E  |passed|failed" "$out/cpu_tests.log" | tail -n 30 | tee -a "$out/gpu_tests.log"
rm -f "$out/cpu_tests.log"
gpu_passed=$(grep -c -E "^tests/\S+ PASSED" "$out/gpu_tests.log")
gpu_total=$("$py" -m pytest -p no:cacheprovider -q --collect-only -m gpu "${tests[@]}" 2>/dev/null | grep -c "::")
echo "GPU-marked tests passed: $gpu_passed of $gpu_total" | tee -a "$out/gpu_tests.log"
[ "$gpu_passed" -eq "$gpu_total" ] || status=1

echo "== 2. letterbox kernel benchmark"
"$py" -m benchmarks.gpu_kernels --iters 200 --json "$out/gpu_kernels.json" 2>&1 | tee "$out/gpu_kernels.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== 3. benchmarks.verify (H2D bandwidth; engine steps need TensorRT)"
timeout 300 "$py" -m benchmarks.verify --out "$out/verify" 2>&1 | tail -n 40

echo "== 4. compute-sanitizer memcheck over the GPU tests"
if command -v compute-sanitizer >/dev/null; then
  timeout 240 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 \
    "$py" -m pytest -p no:cacheprovider -q -m gpu "${tests[@]}" >"$out/sanitizer.log" 2>&1
  echo "compute-sanitizer exit $? (0: clean, 9: errors found, 124: timed out)" | tee -a "$out/sanitizer.log"
  tail -n 15 "$out/sanitizer.log"
else
  echo "compute-sanitizer is not on the PATH: skipped" | tee "$out/sanitizer.log"
fi
exit $status
