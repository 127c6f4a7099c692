#!/usr/bin/env bash
# make install: an idempotent, unattended set-up of .venv with everything the project needs.
#   torch 2.14.1 + torchvision 0.29.1, the project (editable) with versions pinned by constraints.txt,
#   faiss (faiss-gpu when a CUDA device is present or GPU=1, else faiss-cpu), and the mm stack
#   (mmengine, mmcv 2.1.0 built from source with its C++ ops, mmdet, mmsegmentation): tools/install_mm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
GPU="${GPU:-auto}"
say() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"$VENV/bin/python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"attmask needs Python >= 3.11, this venv has {sys.version.split()[0]}")
PY

say "torch 2.14.1 + torchvision 0.29.1"
"${PIP[@]}" install -q -c constraints.txt "setuptools==84.2.1" torch==2.14.1 torchvision==0.29.1

if [ "$GPU" = "auto" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; else GPU=0; fi
fi
if [ "$GPU" = "1" ]; then FAISS=faiss-gpu; OTHER=faiss-cpu; else FAISS=faiss-cpu; OTHER=faiss-gpu; fi
say "attmask (editable) + pinned dependencies + $FAISS"
if "$VENV/bin/python" -m pip show "$OTHER" >/dev/null 2>&1; then
  "${PIP[@]}" uninstall -q -y "$OTHER"
fi
"${PIP[@]}" install -q -c constraints.txt -e ".[dev,$FAISS]"

say "mm stack (mmengine, mmcv with ops, mmdet, mmsegmentation)"
VENV="$VENV" GPU="$GPU" bash tools/install_mm.sh

say "installed: $("$VENV/bin/python" -c 'import torch, timm, numpy; print(f"torch {torch.__version__}, timm {timm.__version__}, numpy {numpy.__version__}")')"
