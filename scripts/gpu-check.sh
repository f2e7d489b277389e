#!/usr/bin/env bash
# One-shot GPU check, run inside a bundle made by `make gpu-bundle` on a
# machine with CUDA and a PyTorch install (no Go needed). It rebuilds our two
# native libraries with CMake against that PyTorch's libtorch, runs the
# prepared device checks and benchmarks, and writes one report.
#
#   scripts/gpu-check.sh                 DEVICE=cuda (default) or cpu (dry run)
#
# Env: DEVICE (cuda, cuda:N or cpu); PYTHON (default python3, must import torch);
# OUT (report dir, default ./report); BATCHES (encoder batches; default
# 1,32,256 on CUDA, 1,8 on cpu); JOBS (build parallelism, default nproc).
# The whole run is meant to take under 8 minutes; each step has a timeout.
set -uo pipefail
bundle="$(cd "$(dirname "$0")/.." && pwd)"
cd "$bundle"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$bundle/report}"
JOBS="${JOBS:-$(nproc)}"
if [ "$DEVICE" = cpu ]; then BATCHES="${BATCHES:-1,8}"; else BATCHES="${BATCHES:-1,32,256}"; fi
mkdir -p "$OUT"
report="$OUT/report.md"
log="$OUT/log.txt"
: >"$log"
t0=$SECONDS
status=0

say() { echo "gpu-check: $*" | tee -a "$log" >&2; }
fail() { say "FAILED: $*"; status=1; }
section() { printf '\n## %s\n\n' "$1" >>"$report"; }

{
  echo "# clipagiqa GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC') · device \`$DEVICE\` · $(sed -n 2p MANIFEST 2>/dev/null)"
} >"$report"

# 1. The machine.
section "Machine"
{
  echo '```'
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -5
  else
    echo "no nvidia-smi"
  fi
  "$PYTHON" -c 'import torch, sys; print("python", sys.version.split()[0], "· torch", torch.__version__, "· CUDA", torch.version.cuda, "· available", torch.cuda.is_available())' 2>&1
  echo "$(nproc) CPUs"
  echo '```'
} >>"$report"

# 2. Native libraries against this PyTorch's libtorch.
section "Native build"
prefix="$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>>"$log")"
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DGOTORCH_DIR="$bundle/src/gotorch")
if [ -n "$prefix" ] && [ -d "$prefix/Torch" ]; then
  cmake_args+=(-DCMAKE_PREFIX_PATH="$prefix")
  echo "CMake prefix: \`$prefix\` (from \`$PYTHON\`)" >>"$report"
else
  echo "CMake prefix: none (\`$PYTHON\`'s torch has no CMake files at \`$prefix\`): the system libtorch" >>"$report"
fi
tb=$SECONDS
if timeout 900 cmake -S src -B build "${cmake_args[@]}" >>"$log" 2>&1 &&
   timeout 900 cmake --build build -j "$JOBS" >>"$log" 2>&1; then
  echo "Built in $((SECONDS - tb)) s: $(grep -h 'libtorch feature' "$log" | sed 's/-- //' | tr '\n' ';')" >>"$report"
else
  fail "native build (see $log)"
  echo "**Native build failed**; the last lines of the log:" >>"$report"
  { echo '```'; tail -30 "$log"; echo '```'; } >>"$report"
  exit 1
fi
torch_lib="$(cat build/torch_lib_dir.txt)"
export LD_LIBRARY_PATH="$bundle/build/lib:$torch_lib:$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  echo
  echo '```'
  for b in bin/*; do
    echo "$(basename "$b"): NEEDED $(readelf -d "$b" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  done
  echo "bin/clipagiqa info:"
  bin/clipagiqa info 2>&1 | head -20
  echo '```'
} >>"$report"

# 3. Device checks (parity, autocast, official scores, training vs CPU, memory).
section "Checks on $DEVICE"
export CLIPAGIQA_TEST_DEVICE="$DEVICE" CLIPAGIQA_REFFIX_DIR="$bundle/fixtures/clip-agiqa-ref"
tc=$SECONDS
timeout 300 bin/devicecheck.test -test.v -test.count=1 -test.timeout 290s >"$OUT/checks.txt" 2>&1
rc=$?
[ $rc = 0 ] || fail "device checks (exit $rc, see $OUT/checks.txt)"
{
  echo "Exit status $rc in $((SECONDS - tc)) s. Results:"
  echo
  echo '```'
  grep -E '^\s*--- (PASS|FAIL|SKIP)' "$OUT/checks.txt"
  echo '```'
  echo
  echo "Measured:"
  echo
  grep -E 'REPORT ' "$OUT/checks.txt" | sed 's/.*REPORT /- /'
  if [ $rc != 0 ]; then
    echo; echo "Failures:"; echo; echo '```'
    grep -E -A12 '^\s*--- FAIL|Error Trace|panic' "$OUT/checks.txt" | head -80
    echo '```'
  fi
} >>"$report"

# 4. Throughput: Go against PyTorch eager and torch.compile, same weights.
section "Throughput on $DEVICE"
weights="$bundle/fixtures/clip-agiqa-ref/tiny_clip_vit_fp16.pt"
model="tiny fixture CLIP (ViT 224/32, width 192, 3 layers)"
if [ "$DEVICE" != cpu ]; then
  weights="$OUT/vitb16.pt"
  if [ ! -s "$weights" ] && ! timeout 240 "$PYTHON" testdata/gen/make_clip.py --config vitb16 --no-trace --out "$weights" >>"$log" 2>&1; then
    fail "generating the ViT-B/16 weights"
    weights="$bundle/fixtures/clip-agiqa-ref/tiny_clip_vit_fp16.pt"
  else
    model="ViT-B/16 (random weights, testdata/gen/make_clip.py)"
  fi
fi
echo "Model: $model; batches $BATCHES; Go = \`clip.Model.EncodeImage\` in inference mode; PyTorch = bench/gpu_reference.py (eager, torch.compile); fp16 = autocast; TF32 off." >>"$report"
export CLIPAGIQA_BENCH_CLIP="$weights" CLIPAGIQA_BENCH_BATCHES="$BATCHES"
timeout 240 bin/devicecheck.test -test.run '^$' -test.bench 'Encoder|TrainStep' -test.benchtime 5x -test.timeout 230s >"$OUT/bench-go.txt" 2>&1 ||
  fail "Go benchmarks (see $OUT/bench-go.txt)"
timeout 300 "$PYTHON" bench/gpu_reference.py --clip "$weights" --device "$DEVICE" --batches "$BATCHES" --iters 5 \
  >"$OUT/bench-pytorch.json" 2>>"$log" || fail "PyTorch reference (see $log)"
"$PYTHON" - "$OUT/bench-go.txt" "$OUT/bench-pytorch.json" >>"$report" 2>>"$log" <<'PY' || fail "throughput table"
import json, re, sys
go = {}
steps = None
for line in open(sys.argv[1]):
    m = re.match(r"BenchmarkEncoder/(fp32|fp16)/batch=(\d+)\S*\s+\d+\s+\d+ ns/op\s+([\d.]+) img/s", line)
    if m:
        go[(m.group(1), int(m.group(2)))] = float(m.group(3))
    m = re.match(r"BenchmarkTrainStep\S*\s+\d+\s+\d+ ns/op\s+([\d.]+) steps/s", line)
    if m:
        steps = float(m.group(1))
try:
    py = json.load(open(sys.argv[2]))
except Exception as e:
    py = {"rows": [], "notes": ["no PyTorch results: %s" % e], "torch": "?"}
ref = {(r["mode"], r["precision"], r["batch"]): r for r in py["rows"]}
batches = sorted({b for _, b in go} | {r["batch"] for r in py["rows"]})
print("PyTorch %s. img/s; ratios are Go ÷ PyTorch.\n" % py.get("torch"))
print("| batch | precision | Go | PyTorch eager | Go ÷ eager | torch.compile | Go ÷ compile |")
print("|---|---|---|---|---|---|---|")
def f(v):
    return "–" if v is None else "%.1f" % v
def x(a, b):
    return "–" if a is None or b is None or b <= 0 else "%.2f×" % (a / b)
for b in batches:
    for p in ("fp32", "fp16"):
        g = go.get((p, b))
        e = ref.get(("eager", p, b), {})
        c = ref.get(("compile", p, b), {})
        if g is None and not e and not c:
            continue
        ei, ci = e.get("img_s"), c.get("img_s")
        cs = f(ci) if "error" not in c else "error: " + c["error"][:60]
        print("| %d | %s | %s | %s | %s | %s | %s |" % (b, p, f(g), f(ei), x(g, ei), cs, x(g, ci)))
print()
print("Training (CLIP-AGIQA, batch 32, encoder in the loop, feature cache off): %s steps/s (Go)." % ("–" if steps is None else "%.2f" % steps))
for n in py.get("notes", []):
    print("\n- " + n)
PY

# 5. Serving: the HTTP server under concurrent clients.
section "Serving on $DEVICE"
if timeout 120 bin/clipagiqa bench-serve --clip "$bundle/fixtures/clip-agiqa-ref/tiny_clip_vit_fp16.pt" \
     --checkpoint "$bundle/fixtures/clip-agiqa-ref" --device "$DEVICE" --concurrency 1,8 --duration 5s \
     --out "$OUT" >"$OUT/serve.txt" 2>&1; then
  echo "Tiny fixture CLIP with the official checkpoints, \`clipagiqa bench-serve\`, 5 s per level:" >>"$report"
  echo >>"$report"
  cat "$OUT"/serve-*.md >>"$report" 2>/dev/null || cat "$OUT/serve.txt" >>"$report"
else
  fail "bench-serve (see $OUT/serve.txt)"
  { echo '```'; tail -15 "$OUT/serve.txt"; echo '```'; } >>"$report"
fi

section "Summary"
echo "Whole run $((SECONDS - t0)) s; status $([ $status = 0 ] && echo OK || echo FAILED)." >>"$report"
say "report: $report ($((SECONDS - t0)) s, status $status)"
exit $status
