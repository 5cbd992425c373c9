#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one go: the CUDA tests of the ops, the ops' benchmark
# (torch's TF32 defaults; no TF32; TF32 in matmuls only, where the CUDA column path's products are
# cuBLAS GEMMs instead of cuDNN 1x1 convs; bfloat16 against a bfloat16 conv), and the model against Detectron2's FCOS at 800x1333
# (eager, then compiled with CUDA graphs). Each step's output goes to OUTDIR, a summary to stdout
# and OUTDIR/summary.txt; a failed step does not stop the others, the exit status says if any did.
#
#   tools/gpu_check.sh [OUTDIR]          (make gpu-check; OUTDIR defaults to gpu-check/)
#
# Needs an environment where torch with CUDA, detectron2 and vfnet import and vfnet._C has CUDA
# kernels for the GPU (make install). PYTHON: the interpreter (default .venv/bin/python when it
# exists, else python3). STEP_TIMEOUT: seconds per step (default 600). DRY_RUN=1 prints the
# steps' commands instead of running them.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUTDIR=${1:-gpu-check}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
failed=()

# step NAME COMMAND...: runs COMMAND with its output in OUTDIR/NAME.txt.
step() {
  local name=$1
  shift
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%s:' "$name"
    printf ' %q' "$@"
    echo
    return
  fi
  local start=$SECONDS
  timeout "$STEP_TIMEOUT" "$@" > "$OUTDIR/$name.txt" 2>&1
  local rc=$?
  echo "[gpu-check] $name: exit $rc in $((SECONDS - start)) s ($OUTDIR/$name.txt)"
  [ $rc -eq 0 ] || failed+=("$name")
}

XDIST=()
if "$PYTHON" -c "import xdist" 2>/dev/null; then XDIST=(-n 4); fi

step environment "$PYTHON" -c "
import torch, torchvision, detectron2, vfnet.ops
from vfnet.ops._extension import use_fused_kernels
print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'torchvision', torchvision.__version__)
print('detectron2', detectron2.__version__, detectron2.__file__)
print('GPU', torch.cuda.get_device_name(), 'capability', torch.cuda.get_device_capability())
print('vfnet._C CUDA kernels for this GPU:', use_fused_kernels(torch.device('cuda', 0)))
assert use_fused_kernels(torch.device('cuda', 0)), 'vfnet._C has no CUDA kernels for this GPU: make install'
"
if [ "${DRY_RUN:-0}" != 1 ] && [ ${#failed[@]} -gt 0 ]; then
  echo "[gpu-check] no usable GPU or vfnet._C without CUDA kernels for it; nothing else is run:"
  tail -3 "$OUTDIR/environment.txt"
  exit 1
fi
step tests "$PYTHON" -m pytest -q -p no:cacheprovider "${XDIST[@]}" -rf tests/ops -k CUDA
step ops "$PYTHON" tools/benchmark_ops.py --device cuda --ops star_conv,dcn --no-first-call --no-memory
step ops_no_tf32 "$PYTHON" tools/benchmark_ops.py --device cuda --ops star_conv --no-first-call --no-memory --tf32 none
step ops_cublas_tf32 "$PYTHON" tools/benchmark_ops.py --device cuda --ops star_conv,dcn --no-first-call --no-memory \
  --tf32 matmul
step ops_bf16 "$PYTHON" tools/benchmark_ops.py --device cuda --ops star_conv,dcn --no-first-call --no-memory \
  --dtype bfloat16
step model "$PYTHON" tools/benchmark_model.py --device cuda --size 800x1333 --repeats 20
step model_compiled "$PYTHON" tools/benchmark_model.py --device cuda --size 800x1333 --repeats 30 --modes inference \
  --compile reduce-overhead
[ "${DRY_RUN:-0}" = 1 ] && exit 0

{
  for name in environment tests ops ops_no_tf32 ops_cublas_tf32 ops_bf16 model model_compiled; do
    echo "== $name"
    case $name in
      environment) cat "$OUTDIR/$name.txt" ;;
      tests) grep -E "^(FAILED|SUBFAILED|ERROR)|passed|failed" "$OUTDIR/$name.txt" | tail -20 ;;
      ops*) grep -E "^(star_conv|dcn) |^target" "$OUTDIR/$name.txt" ;;
      model*) grep -E "^(device|model|vfnet|d2_fcos|first call|compiled vs|VFNet /)" "$OUTDIR/$name.txt" ;;
    esac
  done
  for name in "${failed[@]}"; do
    echo "== $name failed; the end of $OUTDIR/$name.txt:"
    tail -3 "$OUTDIR/$name.txt"
  done
  [ ${#failed[@]} -eq 0 ] && echo "all steps passed" || echo "failed steps: ${failed[*]}"
} | tee "$OUTDIR/summary.txt"
[ ${#failed[@]} -eq 0 ]
