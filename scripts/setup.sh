#!/usr/bin/env bash
# Create .venv (once) and install xaimed into it; `--dev` adds the test tools (pytest, ruff, the
# reference libraries the tests compare against). Safe to re-run: when pyproject.toml, this
# script and the torch requirement are unchanged since the last install, it does nothing and
# prints nothing (the package is installed editable, so edits to xaimed/ need no reinstall).
#
# torch is installed first, pinned through a constraints file, so that pip neither resolves a
# multi-GB CUDA build on a machine without a GPU nor replaces it later. Set XAIMED_TORCH to choose
# another torch requirement, for example XAIMED_TORCH="torch==2.13.0" with PIP_INDEX_URL pointing
# at a CUDA wheel index on a GPU node.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${XAIMED_TORCH:-torch==2.13.0}
EXTRAS=""
case "${1:-}" in
  "") ;;
  --dev) EXTRAS="[dev]" ;;
  *) echo "usage: scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac

# What the installed environment was made from; a different stamp means install again.
stamp_of() {
  { cat pyproject.toml scripts/setup.sh; echo "$TORCH $1"; } | sha256sum | cut -d" " -f1
}
up_to_date() {  # $1: stamp file, $2: extras it stands for
  [ -x .venv/bin/python ] && [ -f "$1" ] && [ "$(cat "$1")" = "$(stamp_of "$2")" ]
}
STAMP_FILE=.venv/.xaimed-setup${EXTRAS:+-dev}
# A test set-up contains the plain one.
if up_to_date "$STAMP_FILE" "$EXTRAS" || { [ -z "$EXTRAS" ] && up_to_date .venv/.xaimed-setup-dev "[dev]"; }; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "$TORCH" > "$CONSTRAINTS"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "$TORCH"
fi
# setuptools warns about every editable install (a folder named like the package may shadow
# it); that is how this checkout is meant to work, so the warning would only be noise.
PYTHONWARNINGS="ignore:Editable installation" "${PIP[@]}" -c "$CONSTRAINTS" -e ".$EXTRAS"
stamp_of "$EXTRAS" > "$STAMP_FILE"
