#!/usr/bin/env bash
# Mutation testing of one module with mutmut (a development tool; not run in CI: too slow for 2 cores).
#
#   tools/mutation_test.sh vfnet/losses.py tests/modeling/test_losses.py tests/modeling/test_loss_semantics.py
#
# mutmut wants the package at the top of the tree it runs in, so this copies vfnet/, configs/ and the given tests
# into a scratch folder (MUTMUT_DIR, default /tmp/vfnet-mutmut) and runs `mutmut run` there, then lists
# what was not killed (`mutmut show NAME` in that folder prints a mutant's diff). One OpenMP thread:
# mutmut forks its workers, and a forked torch with a started thread pool hangs (counted as timeouts).
# MUTMUT_CHILDREN (default 2) sets how many mutants run at once (mutmut's --max-children); use 1 on a
# machine whose other cores are busy (timings, other runs). VENV_BIN (default .venv/bin) picks mutmut.
# Needs: .venv/bin/pip install -r requirements-dev.txt
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 vfnet/MODULE.py TEST_FILE [TEST_FILE ...]" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
WORK="${MUTMUT_DIR:-/tmp/vfnet-mutmut}"
MODULE="$1"; shift
[ -f "$ROOT/projects/VFNet/$MODULE" ] || { echo "no such module: projects/VFNet/$MODULE" >&2; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK/tests"
cp -r "$ROOT/projects/VFNet/vfnet" "$WORK/vfnet"
find "$WORK/vfnet" -name __pycache__ -prune -exec rm -rf {} +
cp "$ROOT/tests/conftest.py" "$ROOT/tests/vfnet_test_utils.py" "$WORK/tests/"
cp -r "$ROOT/configs" "$WORK/configs"  # tests load the configs relative to the repository root
{
    echo "[mutmut]"
    echo "source_paths = vfnet"
    echo "only_mutate = $MODULE"
    echo "pytest_add_cli_args_test_selection ="
    for t in "$@"; do
        mkdir -p "$WORK/$(dirname "$t")" && cp "$ROOT/$t" "$WORK/$t"
        echo "    $t"
    done
    printf "also_copy =\n    configs\n"
    printf "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
} > "$WORK/setup.cfg"
cd "$WORK"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$VENV_BIN/mutmut" run --max-children "${MUTMUT_CHILDREN:-2}"
"$VENV_BIN/mutmut" results | grep -v ": killed" || true
