#!/usr/bin/env bash
# One call on a lent GPU machine (JAX GPU): matmul peak, then sampling and
# training benchmarks at the d512 config, fp32 and bf16, each row
# writing its JSON as soon as it is done. Usage (repo root):
#   OUT=/some/dir bash benchmarks/gpu/run_gpu_bench.sh            # full
#   QUICK=1 OUT=/tmp/x bash benchmarks/gpu/run_gpu_bench.sh       # tiny, CPU smoke test
# Needs keras, keras-hub (+ namex, optree, grain, array-record, portpicker)
# importable: on the device machine from `.whl` (see README.md beside this).
# BUDGET_S: rows are skipped once this many seconds have passed (default 300).
# ROWS="sample_fp32_b64 train_fp32_b64": run only these rows (the peak always runs).
set -u
OUT=${OUT:?set OUT}
# At most a handful of files come back from the device: rows and logs go to
# WORK, and collect.py folds them into $OUT/gpu_results.json + $OUT/logs.txt
# after every row (so a run cut short still returns what it finished).
WORK=${WORK:-/tmp/gpu_bench_work}
rm -rf "$WORK"; mkdir -p "$WORK"  # a fresh machine is bare anyway; no stale rows
PY=${PY:-python3}
BUDGET_S=${BUDGET_S:-300}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# Leave XLA's default preallocation (75 % of GPU memory) on: it is the JAX default users get.
cd benchmarks
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
run() {  # run NAME CMD... : one row set, logged; skipped when the budget is spent
  local name=$1; shift
  if [ -n "${ROWS:-}" ] && [ "$name" != peak ] && [[ " $ROWS " != *" $name "* ]]; then return; fi
  if [ "$(left)" -le 20 ]; then echo "SKIP $name (budget)"; echo "$name skipped" >> "$WORK/skipped.txt"; return; fi
  echo "=== $name ($(left) s left)"
  timeout "$(left)" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  tail -n 8 "$WORK/$name.log"
  [ $rc -ne 0 ] && echo "FAILED $name rc=$rc" && tail -n 30 "$WORK/$name.log"
  $PY gpu/collect.py "$WORK" --out "$OUT/gpu_results.json" --logs "$OUT/logs.txt" --quiet
}
if [ -n "${QUICK:-}" ]; then
  N=256; SCFG=muse_tiny; TCFG=muse_tiny; RUNS=2; STEPS=3; BIG_S=16; BIG_T=32; SMALL_T=8
else
  N=8192; SCFG=d512_l8_cb8192; TCFG=small_d512_l8; RUNS=10; STEPS=15; BIG_S=64; BIG_T=64; SMALL_T=8
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv > "$WORK/nvidia_smi.csv" 2>&1 || true
$PY -c "import jax, keras, keras_hub; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, 'keras_hub', keras_hub.__version__)" || exit 1
run peak $PY matmul_peak.py --n $N --out "$WORK/peak.json"
PEAK=(--peak-json "$WORK/peak.json")
[ -f "$WORK/peak.json" ] || PEAK=()
# The sampler at the config (batch 4, 12 steps, CFG 3 and none), then a big batch.
run sample_bf16_b4 $PY sample_bench.py --configs $SCFG --dtype mixed_bfloat16 --runs $RUNS "${PEAK[@]}" --out "$WORK/sample_bf16_b4.json"
run sample_fp32_b4 $PY sample_bench.py --configs $SCFG --dtype float32 --runs $RUNS "${PEAK[@]}" --out "$WORK/sample_fp32_b4.json"
run train_bf16_b$SMALL_T $PY train_bench.py --configs $TCFG --dtype mixed_bfloat16 --batch $SMALL_T --steps $STEPS --input arrays "${PEAK[@]}" --out "$WORK/train_bf16_b$SMALL_T.json"
run train_fp32_b$SMALL_T $PY train_bench.py --configs $TCFG --dtype float32 --batch $SMALL_T --steps $STEPS --input arrays "${PEAK[@]}" --out "$WORK/train_fp32_b$SMALL_T.json"
run sample_bf16_b$BIG_S $PY sample_bench.py --configs $SCFG --dtype mixed_bfloat16 --batch $BIG_S --runs $RUNS "${PEAK[@]}" --out "$WORK/sample_bf16_b$BIG_S.json"
run train_bf16_b$BIG_T $PY train_bench.py --configs $TCFG --dtype mixed_bfloat16 --batch $BIG_T --steps $STEPS --input arrays "${PEAK[@]}" --out "$WORK/train_bf16_b$BIG_T.json"
run sample_fp32_b$BIG_S $PY sample_bench.py --configs $SCFG --dtype float32 --batch $BIG_S --runs $RUNS "${PEAK[@]}" --out "$WORK/sample_fp32_b$BIG_S.json"
run train_fp32_b$BIG_T $PY train_bench.py --configs $TCFG --dtype float32 --batch $BIG_T --steps $STEPS --input arrays "${PEAK[@]}" --out "$WORK/train_fp32_b$BIG_T.json"
# One JSON with every row (the logs stay beside it) and the table last.
$PY gpu/collect.py "$WORK" --out "$OUT/gpu_results.json" --logs "$OUT/logs.txt"
echo "total $(( $(date +%s) - START )) s"
