#!/usr/bin/env bash
# The GPU check, in one go, on a machine with an NVIDIA GPU (issue 5): builds the CUDA variant,
# runs the test suite (test_devices_cuda runs every device case on the GPU), runs the lesson's
# workflow on cuda against PyTorch's printed numbers, and times the lesson's exercise 4 (the
# same training on cpu and on the GPU). Meant to finish in well under 10 minutes.
#
#   benchmarks/gpu_check.sh [BUILD_DIR]        (default build-gpu; results also in $OUT if set)
#
# Needs what .ci/run installs plus the CUDA toolkit (nvcc on PATH or in /usr/local/cuda/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
out=${OUT:-$build/gpu-check}
mkdir -p "$out"
export PATH="$PATH:/usr/local/cuda/bin"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

log "$(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/summary.txt" || true
nvcc --version | tail -1 | tee -a "$out/summary.txt"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.' || true)
arch=${arch:-90}

log "configure (cuda enabled, gpu_arch=$arch)"
start=$SECONDS
meson setup "$build" --reconfigure -Dcuda=enabled -Dgpu_arch="$arch" -Dbenchmarks=disabled \
  > "$out/setup.log" 2>&1 || meson setup "$build" -Dcuda=enabled -Dgpu_arch="$arch" \
  -Dbenchmarks=disabled > "$out/setup.log" 2>&1
log "build"
ninja -C "$build" > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
log "built in $((SECONDS - start)) s"

log "test suite (devices_cuda runs the cuda cases on the GPU)"
status=0
meson test -C "$build" --print-errorlogs --no-rebuild > "$out/tests.log" 2>&1 || status=1
grep -E "^(Ok|Fail|Skipped|Timeout):" "$out/tests.log" | tee -a "$out/summary.txt"
"$build/tests/test_devices_cuda" --log_level=message > "$out/devices_cuda.log" 2>&1 || status=1
grep -c "skipped" "$out/devices_cuda.log" | sed 's/^/cuda cases skipped: /' | tee -a "$out/summary.txt" || true

log "the lesson's workflow on cuda, against PyTorch's output"
bash tests/check_workflow.sh "$build/examples/linear_regression_cuda" \
  tests/golden/linear_regression.out cuda > "$out/workflow_cuda.log" 2>&1 \
  && log "workflow on cuda: same output as PyTorch" || { status=1; cat "$out/workflow_cuda.log"; }

log "exercise 4: the same training on each device"
"$build/examples/device_timing_cuda" 5 | tee "$out/device_timing.txt" | tee -a "$out/summary.txt"

log "done in $((SECONDS - start)) s, status $status"
exit $status
