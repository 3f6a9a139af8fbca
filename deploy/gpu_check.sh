#!/usr/bin/env bash
# The GPU check: the `gpu`-marked tests (hf engine and SDPO update on CUDA) and a short SDPO step
# benchmark, then one worker's throughput with many co-batched sessions (toy model, bf16, up to
# 32 at once, updates in turns and joint), how often co-batching changes a sampled token, and
# 8 and 32 sessions' joint update against the same updates one by one, on a machine with a GPU
# and no network. Writes everything under $OUT (default ./gpu-check/): summary.txt,
# pytest.log, gpu_step.json, worker_throughput.json, cobatch_tokens-toy.json,
# joint_update-toy-cuda-{8,32}.json.
#
# The machine needs python3 with torch (CUDA), numpy and matplotlib. Packages it lacks come as
# wheels in .whl/ (pydantic, pydantic-settings, transformers 4.x, peft, redis, ...), and a
# bubblewrap binary in .bwrap/ when it has none; prepare both on a machine with network:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl <pins>
#   apt-get download bubblewrap && dpkg -x bubblewrap_*.deb .bwrap
# Dry run on a CPU: SDPO_GPU_TEST_DEVICE=cpu GPU_CHECK_DEVICE=cpu \
#   GPU_CHECK_THROUGHPUT_ARGS="--sessions 4 --budget 8 --levels 1 4" deploy/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/sdpo-site .whl/*.whl || { echo "wheel install failed" | tee "$SUMMARY"; exit 1; }
  export PYTHONPATH="/tmp/sdpo-site:$PWD"
else
  export PYTHONPATH="$PWD"
fi

# The sandbox drops to nobody before bwrap, so bwrap must sit where nobody can run it.
if ! command -v bwrap >/dev/null && [ -x .bwrap/usr/bin/bwrap ]; then
  install -m 0755 .bwrap/usr/bin/bwrap /usr/local/bin/bwrap
fi
SANDBOX="bwrap"
if ! setpriv --reuid=65534 --regid=65534 --clear-groups \
    bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc true 2>"$OUT/bwrap.err"; then
  SANDBOX="weak (bwrap failed: $(head -c 200 "$OUT/bwrap.err"))"
  export SDPO_SANDBOX_ALLOW_WEAK=1
fi

{
  echo "# sdpo-serve GPU check, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python3 -c 'import sys, torch, transformers, peft
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "peft", peft.__version__)'
  echo "sandbox: $SANDBOX"
} | tee "$SUMMARY"

# Package versions on a lent machine differ from our pins: report warnings, don't fail on them.
python3 -m pytest tests/worker/test_gpu.py -m gpu -v -p no:cacheprovider -W default \
  -o addopts="" --timeout 600 2>&1 | tee "$OUT/pytest.log"
TESTS=${PIPESTATUS[0]}
echo "gpu tests: exit $TESTS; $(grep -E '^(=+ )?[0-9]+ (passed|failed)|(passed|failed|skipped) in' "$OUT/pytest.log" | tail -1)" \
  | tee -a "$SUMMARY"

python3 bench/gpu_step.py --out "$OUT" --device "$DEVICE" ${GPU_CHECK_BENCH_ARGS:-} 2>&1 \
  | tee "$OUT/bench.log"
BENCH=${PIPESTATUS[0]}
echo "benchmark: exit $BENCH" | tee -a "$SUMMARY"
[ -f "$OUT/gpu_step.json" ] && cat "$OUT/gpu_step.json" >>"$SUMMARY"
# Many sessions on one worker: concurrency 1..32 side by side (bench/worker_throughput.py).
python3 bench/worker_throughput.py --device "$DEVICE" --dtype bfloat16 \
  ${GPU_CHECK_THROUGHPUT_ARGS:---sessions 32 --budget 64 --levels 1 8 32} \
  --out "$OUT/worker_throughput.json" 2>&1 | tee "$OUT/throughput.log"
THROUGHPUT=${PIPESTATUS[0]}
echo "worker throughput: exit $THROUGHPUT" | tee -a "$SUMMARY"
tail -7 "$OUT/throughput.log" >>"$SUMMARY"
python3 bench/cobatch_tokens.py --device "$DEVICE" --out "$OUT" 2>&1 | tee -a "$SUMMARY"
# Joint updates (bench/joint_update.py): 8 and 32 sessions, bf16.
for sessions in 8 32; do
  python3 bench/joint_update.py --device "$DEVICE" --dtype bfloat16 --sessions "$sessions" \
    --out "$OUT" 2>&1 | tee -a "$SUMMARY"
done
exit $((TESTS || BENCH || THROUGHPUT))
