#!/usr/bin/env bash
# The README's test command (`npm test`): unit tests beside each module, then functional tests.
# Node 20's test runner does not expand globs itself, so the shell does it here.
#
# The run gets a temp dir of its own and a mark in its environment (which every process it starts
# inherits). Afterwards, whatever a test left behind, a folder in that temp dir or a process
# carrying the mark, is named, removed or killed, and fails the run: a test must stop what it
# started and remove what it made, whatever its outcome.
set -uo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob globstar
unit=(common/**/*.test.ts services/*.test.ts)
functional=(testFunctional/*.test.ts)
if [ "$#" -gt 0 ]; then
  unit=("$@")
  functional=()
fi

run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/docq-test-run-XXXXXX")
export DOCQ_TEST_RUN="docq-test-run-$$-$RANDOM"
# Job scripts see only the variables docq passes them: this one too, so their leftovers are found.
export DOCQ_PASS_ENV=DOCQ_TEST_RUN

# Pids of live processes (not this shell) whose environment carries this run's mark.
marked_processes() {
  local environ pid
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [ "$pid" = "$$" ] && continue
    if grep -qzx "DOCQ_TEST_RUN=$DOCQ_TEST_RUN" "$environ" 2>/dev/null; then
      # A zombie is already dead; it only waits for its parent.
      grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null || echo "$pid"
    fi
  done
}

cleanup() {
  local status=$1 leftovers pids
  pids=$(marked_processes)
  if [ -n "$pids" ]; then
    echo "# tests left these processes running (killed now):" >&2
    for pid in $pids; do echo "#   $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2; done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    status=1
  fi
  # tsx keeps its compile cache in the temp dir: not something a test made.
  leftovers=$(ls -A "$run_tmp" | grep -v '^tsx-')
  if [ -n "$leftovers" ]; then
    echo "# tests left these in the temp dir (removed now):" >&2
    echo "$leftovers" | sed 's/^/#   /' >&2
    status=1
  fi
  rm -rf "$run_tmp"
  exit "$status"
}

# The functional files that start whole clusters (several sites, pm2, repeated SIGKILLs): they run
# one after another in a lane of their own, beside a second lane with the other functional files,
# so no two of them ever share the machine's cores, and the run takes the longer lane's time.
HEAVY=(testFunctional/cluster.test.ts testFunctional/crash.test.ts testFunctional/stealing.test.ts testFunctional/stealing-pays.test.ts testFunctional/postgres-site.test.ts)

is_heavy() {
  local file=$1 heavy
  for heavy in "${HEAVY[@]}"; do [ "$file" = "$heavy" ] && return 0; done
  return 1
}

# Runs test files one at a time, its report into $1 (printed once the lane is over, whole).
run_lane() {
  local report=$1
  shift
  TMPDIR="$run_tmp" node --import tsx --test --test-concurrency=1 --test-timeout=180000 "$@" >"$report" 2>&1
}

# A test that hangs fails within this limit, far below the time CI allows the whole run.
# Unit test files run two at a time (a third of the unit phase is starting Node and compiling).
status=0
TMPDIR="$run_tmp" node --import tsx --test --test-concurrency=2 --test-timeout=180000 "${unit[@]}" || status=1
if [ "${#functional[@]}" -gt 0 ]; then
  heavy_lane=()
  light_lane=()
  for file in "${functional[@]}"; do
    if is_heavy "$file"; then heavy_lane+=("$file"); else light_lane+=("$file"); fi
  done
  reports=$(mktemp -d "${TMPDIR:-/tmp}/docq-test-reports-XXXXXX")
  pids=()
  if [ "${#heavy_lane[@]}" -gt 0 ]; then
    run_lane "$reports/heavy" "${heavy_lane[@]}" &
    pids+=($!)
  fi
  if [ "${#light_lane[@]}" -gt 0 ]; then
    run_lane "$reports/light" "${light_lane[@]}" &
    pids+=($!)
  fi
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  for lane in heavy light; do
    if [ -f "$reports/$lane" ]; then
      echo "# ---- functional tests, $lane lane ----"
      cat "$reports/$lane"
    fi
  done
  rm -rf "$reports"
fi
cleanup $status
