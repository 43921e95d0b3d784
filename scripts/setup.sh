#!/usr/bin/env bash
# Create .venv (once) and install xaimed with its test tools into it. Safe to re-run.
#
# torch is installed first, pinned, so that pip does not resolve a multi-GB CUDA build on a
# machine without a GPU. Set XAIMED_TORCH to choose another torch requirement, for example
# XAIMED_TORCH="torch==2.13.0" with PIP_INDEX_URL pointing at a CUDA wheel index on a GPU node.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "${XAIMED_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# nnU-Net v2 support (model.nnunet), installed so that torch cannot move (see the script).
./scripts/install_nnunet.sh
