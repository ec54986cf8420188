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

# The functional files that start whole clusters (pm2, three sites, repeated SIGKILLs) run one after
# another in a lane of their own, so no two of them ever share the machine's cores. The other files
# run in two more lanes beside it (most of their time is waiting on processes, not computing): the
# two that start several processes of their own (one site on PostgreSQL, four small sites) one in
# each, the rest dealt alternately. The run takes the longest lane's time.
HEAVY=(testFunctional/cluster.test.ts testFunctional/crash.test.ts testFunctional/stealing.test.ts)
SECOND_LANE_FIRST=(testFunctional/postgres-site.test.ts)
THIRD_LANE_FIRST=(testFunctional/stealing-pays.test.ts)

in_list() {
  local file=$1 item
  shift
  for item in "$@"; do [ "$file" = "$item" ] && return 0; done
  return 1
}

# Runs test files one at a time, its report into $1 (printed once the lane is over, whole).
# Node's --test-timeout bounds each file as a whole too: cluster.test.ts takes 150 s on a quiet
# machine of this kind and 190 s on a slow afternoon, so a file gets 8 minutes (its tests bound
# their own waits far below that).
run_lane() {
  local report=$1
  shift
  TMPDIR="$run_tmp" node --import tsx --test --test-concurrency=1 --test-timeout=480000 "$@" >"$report" 2>&1
}

# A test that hangs fails within this limit, far below the time CI allows the whole run.
# Unit test files run two at a time (a third of the unit phase is starting Node and compiling).
status=0
TMPDIR="$run_tmp" node --import tsx --test --test-concurrency=2 --test-timeout=180000 "${unit[@]}" || status=1
if [ "${#functional[@]}" -gt 0 ]; then
  heavy_lane=()
  second_lane=()
  third_lane=()
  next=second
  for file in "${functional[@]}"; do
    if in_list "$file" "${HEAVY[@]}"; then
      heavy_lane+=("$file")
    elif in_list "$file" "${SECOND_LANE_FIRST[@]}"; then
      second_lane=("$file" "${second_lane[@]}")
    elif in_list "$file" "${THIRD_LANE_FIRST[@]}"; then
      third_lane=("$file" "${third_lane[@]}")
    elif [ "$next" = second ]; then
      second_lane+=("$file")
      next=third
    else
      third_lane+=("$file")
      next=second
    fi
  done
  reports=$(mktemp -d "${TMPDIR:-/tmp}/docq-test-reports-XXXXXX")
  pids=()
  for lane in heavy second third; do
    declare -n files="${lane}_lane"
    if [ "${#files[@]}" -gt 0 ]; then
      run_lane "$reports/$lane" "${files[@]}" &
      pids+=($!)
    fi
    unset -n files
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  for lane in heavy second third; do
    if [ -f "$reports/$lane" ]; then
      echo "# ---- functional tests, $lane lane ----"
      cat "$reports/$lane"
    fi
  done
  rm -rf "$reports"
fi
cleanup $status
