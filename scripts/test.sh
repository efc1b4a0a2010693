#!/bin/bash
# The whole test suite, QEMU boots included.  pytest's exit code is the result
# (5, "no tests collected", is a failure like any other non-zero code).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
