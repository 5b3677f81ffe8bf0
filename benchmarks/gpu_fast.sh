# GPU side of the fast-fitting benchmarks (issue 7), run by the device tool in the repository root:
#   bash benchmarks/gpu_fast.sh [tests] [kernels] [hashgrid] [images]     (default: all four; ~12 minutes)
# Carry .whl (tqdm, pypng) and, for `images`, .carry/data/fashion-mnist and .carry/data/noto (the built-in datasets).
# Each part writes its log and its results JSON under $OUT.
set -o pipefail
source benchmarks/gpu_env.sh
source benchmarks/gpu_data.sh
export PYTHONPATH=$PWD:$PYTHONPATH
for part in ${*:-tests kernels hashgrid images}; do
  case $part in
    tests) timeout 240 python -m pytest -q -m gpu tests/test_fused_mlp.py tests/test_hashgrid_fused.py \
             tests/test_cuda_graph.py tests/test_fit_images.py tests/test_adam.py > "$OUT/tests.txt" 2>&1 ;;
    kernels) timeout 400 python benchmarks/fit_kernels.py --device cuda --json "$OUT/fit_kernels_cuda.json" > "$OUT/kernels.txt" 2>&1 ;;
    hashgrid) timeout 200 python benchmarks/fit_hashgrid.py --device cuda --json "$OUT/fit_hashgrid_cuda.json" > "$OUT/hashgrid.txt" 2>&1 ;;
    images) timeout 400 python benchmarks/fit_images.py --device cuda --json "$OUT/fit_images_cuda.json" > "$OUT/images.txt" 2>&1 ;;
  esac
  echo "== $part: exit $?"; tail -4 "$OUT/$part.txt" 2>/dev/null
done
