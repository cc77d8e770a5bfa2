#!/usr/bin/env bash
# Creates `.venv` with the Python SDK the interop tests drive (botocore), if it is not there yet.
# Idempotent; the interop tests look for `.venv/bin/python`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/python ] && .venv/bin/python -c 'import botocore' 2>/dev/null; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-interop.txt
