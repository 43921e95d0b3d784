#!/usr/bin/env bash
# Install the nnU-Net v2 support (xaimed[nnunet]) into .venv without letting torch move.
#
# nnunetv2 -> dynamic-network-architectures -> timm -> torchvision: the newest torchvision
# requires a newer torch, and pip would replace the CPU torch with a CUDA build. So torch is
# pinned by a constraints file to the version installed now, the extra's other requirements are
# installed under that constraint, and nnunetv2 + dynamic-network-architectures come with
# --no-deps (they run without timm and torchvision). Fails if torch changed anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
before=$("$PY" -c "import torch; print(torch.__version__)")
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${before}" >"$constraints"
"$PY" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[nnunet]"
"$PY" -m pip install -q --disable-pip-version-check --no-deps "nnunetv2==2.8.1" \
  "dynamic-network-architectures==0.4.4"
after=$("$PY" -c "import torch; print(torch.__version__)")
if [ "$before" != "$after" ]; then
  echo "installing nnunetv2 changed torch from $before to $after" >&2
  exit 1
fi
"$PY" -c "import nnunetv2.inference.predict_from_raw_data" || { echo "nnunetv2 does not import" >&2; exit 1; }
