#!/usr/bin/env bash
# The prepared GPU check: on a machine with an NVIDIA GPU and CuPy, one command that
#   1. runs the whole test suite with --device cuda,
#   2. trains the default model on the GPU and on the CPU and compares the loss curves,
#   3. runs `bench train-step` and `bench attention` on the GPU,
# and writes every result (JSON + Markdown, plus the logs) into one folder. Budget: under 8 minutes
# on an H100/H200; each step has its own time limit so one hang cannot eat the rest.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default: gpu_check/
#
# Needs the package's dependencies importable (pip install '.[test,cuda13]'; on a machine without
# internet, install carried wheels and put them on PYTHONPATH first).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=()

step() {   # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, record the exit code
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    status+=("$name|$rc|$((SECONDS - t0))")
    tail -n 3 "$OUT/$name.log"
}

python -c "import cupy, json; d = cupy.cuda.runtime.getDeviceProperties(0); \
print(json.dumps({'gpu': d['name'].decode(), 'memory_gib': round(d['totalGlobalMem'] / 2**30, 1), \
'cuda_runtime': cupy.cuda.runtime.runtimeGetVersion(), 'cupy': cupy.__version__}))" > "$OUT/device.json" \
    || { echo "no usable GPU/CuPy: nothing to check"; exit 2; }
cat "$OUT/device.json"

step tests 240 python -m pytest -q -p no:cacheprovider --device cuda -x --junitxml="$OUT/tests.xml" tests
step train_compare 150 python benchmarks/gpu_train_compare.py --out "$OUT" --steps 500
step bench_train_step 60 python -m minitransformer bench train-step -- --device cuda --steps 20 --no-torch --out "$OUT"
step bench_attention 100 python -m minitransformer bench attention -- --device cuda --quick --no-plot --out "$OUT"
# NCCL through CuPy, one rank per GPU (at most 2): collectives and ZeRO-1 steps against the host (chapter 41)
step nccl 60 mpiexec -n "$(python -c 'import cupy; print(min(2, cupy.cuda.runtime.getDeviceCount()))')" \
    python tests/mpi/nccl_smoke.py

{
    echo "# GPU check"
    echo
    echo "Device: \`$(cat "$OUT/device.json")\`"
    echo
    echo "| step | exit code | seconds |"
    echo "| --- | ---: | ---: |"
    for s in "${status[@]}"; do IFS='|' read -r n rc t <<< "$s"; echo "| $n | $rc | $t |"; done
} > "$OUT/summary.md"
python - "$OUT" "${status[@]}" <<'PY'
import json, sys
out, rows = sys.argv[1], sys.argv[2:]
steps = [{"step": n, "exit_code": int(rc), "seconds": int(t)} for n, rc, t in (r.split("|") for r in rows)]
json.dump({"device": json.load(open(f"{out}/device.json")), "steps": steps}, open(f"{out}/summary.json", "w"), indent=1)
PY
cat "$OUT/summary.md"
for s in "${status[@]}"; do IFS='|' read -r _ rc _ <<< "$s"; [ "$rc" = 0 ] || exit 1; done
