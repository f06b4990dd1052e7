#!/usr/bin/env bash
# CI: build gptlab's C core with AddressSanitizer + UndefinedBehaviorSanitizer in a temporary
# copy of the tree (the normal in-place build is left alone) and run the C-core, loss, model,
# tokenizer and optimizer tests, and the fuzz campaigns (tests/test_fuzz.py, whose child
# processes inherit the sanitizers), under it. Any sanitizer report aborts the run.
#
#   .ci/sanitize.sh                 # uses `python` from PATH (numpy, pytest, hypothesis)
#   PYTHON=/path/to/python .ci/sanitize.sh [extra pytest args]
#
# CPython itself is not instrumented, so libasan must be loaded first (LD_PRELOAD) and leak
# detection is off here (the interpreter keeps memory alive at exit on purpose); the leak check
# of gptlab's own code is a separate pass: .ci/sanitize.sh --leaks (see docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CC=${CC:-gcc}
MODE=tests
if [[ "${1:-}" == "--leaks" ]]; then MODE=leaks; shift; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gptlab-sanitize.XXXXXX")
trap 'rm -rf "$work"' EXIT
# the tracked and untracked-but-not-ignored files: exactly what a checkout plus local edits has
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$work" 2>/dev/null || true
cd "$work"
GPTLAB_SANITIZE=1 CC="$CC" "$PY" setup.py build_ext --inplace -q >build.log 2>&1 || {
    cat build.log; echo "sanitize: build failed"; exit 1; }

ASAN_LIB=$("$CC" -print-file-name=libasan.so)
UBSAN_LIB=$("$CC" -print-file-name=libubsan.so)
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:report_error_type=1
export OMP_NUM_THREADS=2 PYTHONDONTWRITEBYTECODE=1

if [[ "$MODE" == leaks ]]; then
    # LeakSanitizer on a short training run (benchmarks/soak.py --leak-check). CPython and
    # numpy leave memory allocated at exit on purpose, so the report is not empty; it is
    # filtered: a leak counts against gptlab when its allocation stack passes through
    # gptlab's C code (csrc/ or the _core module). Any such leak fails the run.
    export ASAN_OPTIONS=detect_leaks=1:malloc_context_size=40:log_path=$work/lsan
    export LSAN_OPTIONS=exitcode=0
    "$PY" benchmarks/soak.py --steps 20 --leak-check "$@"
    env -u LD_PRELOAD ASAN_OPTIONS= "$PY" - "$work" <<'PYEOF'
import glob, re, sys
text = "".join(open(f).read() for f in glob.glob(sys.argv[1] + "/lsan*"))
records = [r for r in re.split(r"\n\s*\n", text) if re.match(r"\s*(Direct|Indirect) leak", r)]
ours = [r for r in records if "csrc/" in r or "gptlab/_core" in r]
size = lambda rs: sum(int(re.search(r"leak of (\d+) byte", r).group(1)) for r in rs)
print(f"LeakSanitizer: {len(records)} leak records, {size(records)} bytes in all (CPython, "
      f"numpy); from gptlab's code: {len(ours)} records, {size(ours)} bytes")
for r in ours[:5]:
    print(r)
sys.exit(1 if ours else 0)
PYEOF
    echo "sanitize: no leak from gptlab's code"
    exit 0
fi

export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:max_allocation_size_mb=3072
"$PY" -m pytest -q -p no:cacheprovider -k "not torch" \
    tests/test_gemm.py tests/test_layers.py tests/test_losses.py tests/test_model.py \
    tests/test_tokenizer.py tests/test_optim.py tests/test_fuzz.py tests/test_bf16.py "$@"
# The AVX-512 GEMM path, which this CPU may lack: the same kernel source with each 512-bit
# vector emulated by two 256-bit halves (its tile, packing and blocking are what is tested).
if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    GPTLAB_EMULATE_AVX512=1 GPTLAB_SANITIZE=1 CC="$CC" env -u LD_PRELOAD "$PY" setup.py \
        build_ext --inplace -q --force >build-avx512.log 2>&1 || {
        cat build-avx512.log; echo "sanitize: emulated AVX-512 build failed"; exit 1; }
    "$PY" -m pytest -q -p no:cacheprovider -k "not torch" tests/test_gemm.py tests/test_layers.py
fi
echo "sanitize: ASan + UBSan clean"
