#!/usr/bin/env bash
# The OpenMMLab stack for COCO / ADE20K: mmengine 0.10.7, mmcv 2.1.0 WITH its compiled ops,
# mmdet 3.3.0, mmsegmentation 1.2.2 (+ ftfy, regex that mmseg.utils imports).
#
# mmcv 2.1.0 has no wheel for torch 2.14, so it is built from source. Three obstacles, handled here:
#  1. its setup.py imports pkg_resources, gone from setuptools >= 70, while torch 2.14 itself needs
#     setuptools >= 77: a setuptools 69.5.1 is installed into $VENV/build-setuptools and put first
#     on PYTHONPATH for the build only (--no-build-isolation, so the build sees the venv's torch);
#  2. it compiles with -std=c++17 (or c++14) while torch >= 2.10 headers need C++20:
#     tools/cxx20-wrapper.sh is used as the compiler and rewrites those flags to -std=c++20;
#  3. it takes ~8 min on 2 cores with ninja (MAX_JOBS = CPU count); pip caches the built wheel
#     (~/.cache/pip/wheels), so a second install on the same machine reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
GPU="${GPU:-0}"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

have_mmcv_ops() {
  "$PY" - <<'PY' 2>/dev/null
import importlib.metadata as md
assert md.version("mmcv") == "2.1.0"
import torch
from mmcv.ops import nms
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11]], dtype=torch.float32)
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
PY
}

if have_mmcv_ops; then
  echo "mmcv 2.1.0 with compiled ops: already installed"
else
  echo "mmcv 2.1.0: building from source with its C++ ops (about 8 min on 2 cores; cached by pip afterwards)"
  "${PIP[@]}" install -q -c constraints.txt ninja addict mmengine==0.10.7 opencv-python yapf packaging pyyaml pillow numpy
  BUILD_ST="$(cd "$VENV" && pwd)/build-setuptools"
  if [ ! -f "$BUILD_ST/pkg_resources/__init__.py" ]; then
    PIP_CONSTRAINT="" "${PIP[@]}" install -q --no-deps --target "$BUILD_ST" "setuptools==69.5.1"
  fi
  force_cuda=0
  if [ "$GPU" = "1" ] && command -v nvcc >/dev/null 2>&1; then force_cuda=1; fi
  PYTHONPATH="$BUILD_ST${PYTHONPATH:+:$PYTHONPATH}" \
  CC="$PWD/tools/cxx20-wrapper.sh" CXX="$PWD/tools/cxx20-wrapper.sh" \
  MMCV_WITH_OPS=1 FORCE_CUDA="$force_cuda" MAX_JOBS="$(nproc)" \
    "${PIP[@]}" install --no-build-isolation --no-deps -c constraints.txt mmcv==2.1.0
  have_mmcv_ops || { echo "mmcv 2.1.0 was installed but its ops do not load" >&2; exit 1; }
fi
"${PIP[@]}" install -q -c constraints.txt mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 ftfy regex
"$PY" -c "import mmdet, mmseg, mmcv.ops; print(f'mm stack: mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')"
