#!/bin/sh
# fail: always fails, for tests of the failure path (exit code, stderr tail in the error).
# Contract: see scripts-job/noop. It does not read its request: docq ignores a closed stdin.
echo "fail: this job always fails (as designed, for tests)" >&2
exit 1
