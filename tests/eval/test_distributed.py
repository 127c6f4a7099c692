"""Distributed extraction under torchrun (2 gloo processes on CPU) equals one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from attmask.eval.cli import main

from .helpers import mini_image_folder

CKPT = "random:vit_d64_l2_h2_patch8_32"


def test_two_process_extraction_equals_single_process(data_root: Path, tmp_path: Path) -> None:
    folder = mini_image_folder(data_root, tmp_path / "imgs", per_class=5, splits=("test",)) / "test"
    common = ["extract", "--ckpt", CKPT, "--images", str(folder), "--resize", "32", "--crop", "32",
              "--num-workers", "0", "--batch-size", "4", "--no-cache", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "attmask.eval.cli", *common, "--out", str(tmp_path / "dist")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "single" / "features.npz") as a, np.load(tmp_path / "dist" / "features.npz") as b:
        assert list(a["paths"]) == list(b["paths"])
        np.testing.assert_allclose(a["features"], b["features"], rtol=1e-5, atol=1e-6)
        assert a["features"].shape == (15, 64)
