#!/usr/bin/env bash
# A new user's first hour, scripted (issue 18). Clones this repository's committed HEAD into a
# temporary folder (no ../shared beside it, as on anyone's laptop), makes a fresh venv, and runs
# what the README tells a newcomer, from the README itself (scripts/readme_blocks.py):
#   1. the first command:  pip install -r requirements.txt && python -m ceeh_jax.main
#   2. the Python API example (the README's `fast` python block)
#   3. the evaluation sequence (the README's `slow` block: train, eval base, eval trained, compare)
#   4. the package: pip install -e . , then `import ceeh_jax` and `ceeh-jax` from another folder
#   5. the second command: pip install -r requirements-test.txt && python -m pytest -q -m "not slow"
# with a cold XLA cache, printing each step's wall time; exits non-zero at the first failure.
#
#   scripts/fresh_clone_check.sh            # ~1 h on a loaded 2-core machine
#   KEEP=1 scripts/fresh_clone_check.sh     # keep the temporary folder (its path is printed)
#   SKIP_TESTS=1 scripts/fresh_clone_check.sh   # steps 1-4 only
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ceeh_fresh_clone.XXXXXX")
LOG="$WORK/log"
mkdir -p "$LOG"
cleanup() { [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT

NAMES=()
TIMES=()
step() {  # step NAME COMMAND...: runs the command, its output in $LOG/<n>.log, records the time
  local name=$1; shift
  local n=${#NAMES[@]}
  echo "== $name"
  local t0=$(date +%s)
  "$@" > "$LOG/$n.log" 2>&1
  local rc=$?
  NAMES+=("$name"); TIMES+=("$(( $(date +%s) - t0 ))")
  tail -n 12 "$LOG/$n.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -n 8 | sed 's/^/   /'
  printf '   -> %s s, exit %s\n' "${TIMES[-1]}" "$rc"
  if [ $rc -ne 0 ]; then
    echo "FAILED: $name (full output: $LOG/$n.log; KEEP=1 keeps it)" >&2
    KEEP=1
    summary
    exit 1
  fi
}
summary() {
  echo
  echo "| step | wall time (s) |"
  echo "| --- | ---: |"
  for i in "${!NAMES[@]}"; do echo "| ${NAMES[$i]} | ${TIMES[$i]} |"; done
}

cd "$WORK"
step "git clone (committed HEAD)" git clone -q "$SRC" "$WORK/repo"
cd "$WORK/repo" || exit 1
[ -e ../shared ] && { echo "a ../shared exists beside the clone" >&2; exit 1; }
step "fresh venv" "$PYTHON" -m venv "$WORK/venv"
# shellcheck disable=SC1091
source "$WORK/venv/bin/activate" || exit 1
export JAX_PLATFORMS=cpu
export CEEH_JAX_TEST_CACHE="$WORK/xla_cache"   # the tests' compilation cache starts cold
unset XLA_FLAGS CEEH_DEBUG PYTHONPATH

block() { python scripts/readme_blocks.py "$1" "$2"; }
# 1. The README's first command, split where it says && so each part gets its own time.
CMD1=$(block fresh-clone 0)
[ "$CMD1" = "pip install -r requirements.txt && python -m ceeh_jax.main" ] || {
  echo "the README's first command changed: $CMD1" >&2; exit 1; }
step "pip install -r requirements.txt" pip install -r requirements.txt
step "python -m ceeh_jax.main (the default job)" python -m ceeh_jax.main
# 2. The API example, as written, typed into `python` at the repository root.
block fast 0 > "$WORK/api_example.py"
step "README Python API example" bash -c "python - < '$WORK/api_example.py'"
# 3. The evaluation sequence (its first command finds runs/tiny finished and returns).
block slow 0 > "$WORK/evaluation.sh"
step "README evaluation sequence (eval base, eval trained, compare)" bash -euo pipefail "$WORK/evaluation.sh"
# 4. The package from anywhere.
step "pip install -e . (console script ceeh-jax)" pip install -e . --no-deps
cd "$WORK"
step "import ceeh_jax + ceeh-jax --config=eval_tiny from another folder" bash -euo pipefail -c '
  python -c "import ceeh_jax, ceeh_jax.data as d; print(ceeh_jax.__file__, d.DATA_DIR)"
  ceeh-jax --config=eval_tiny --workdir=ev_pkg --config.eval.limit=4
  out=$(ceeh-jax --config.sampling.num_sample=4 2>&1 || true)
  echo "$out"; [ "$out" = "error: unknown config key sampling.num_sample; did you mean sampling.num_samples?" ]'
cd "$WORK/repo"
# 5. The README's second command.
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  CMD2=$(block fresh-clone 1)
  [ "$CMD2" = 'pip install -r requirements-test.txt && python -m pytest -q -m "not slow"' ] || {
    echo "the README's test command changed: $CMD2" >&2; exit 1; }
  step "pip install -r requirements-test.txt" pip install -r requirements-test.txt
  step 'python -m pytest -q -m "not slow" (cold XLA cache)' python -m pytest -q -m "not slow"
  grep -E '^[0-9]+ (passed|failed)|passed|skipped' "$LOG/$((${#NAMES[@]} - 1)).log" | tail -n 3
fi
summary
echo "fresh clone check passed"
