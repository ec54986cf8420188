#!/usr/bin/env bash
# The README's test command (`npm test`): unit tests beside each module, then functional tests.
# Node 20's test runner does not expand globs itself, so the shell does it here.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
files=(common/*.test.ts services/*.test.ts testFunctional/*.test.ts)
if [ "$#" -gt 0 ]; then files=("$@"); fi
exec node --import tsx --test --test-concurrency=1 --test-timeout=600000 "${files[@]}"
