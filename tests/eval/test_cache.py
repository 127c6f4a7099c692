"""Feature cache: hit, miss on any change, corrupt entries recomputed, ``--no-cache``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from attmask.eval.cache import FeatureCache
from attmask.eval.context import RunContext
from attmask.eval.datasets import index_image_folder
from attmask.eval.transforms import EvalTransform

from .helpers import mini_image_folder

T32 = EvalTransform(resize=32, crop=32)


def _args(tmp: Path, ckpt: str = "random:vit_d64_l2_h2_patch8_32", no_cache: bool = False) -> argparse.Namespace:
    return argparse.Namespace(out=str(tmp / "out"), device="cpu", num_workers=0, no_cache=no_cache,
                              cache_dir=str(tmp / "cache"), ckpt=ckpt, checkpoint_key=None, arch=None,
                              patch_size=None, seed=0, batch_size=16)


@pytest.fixture
def folder(data_root: Path, tmp_path: Path) -> Path:
    return mini_image_folder(data_root, tmp_path / "imgs", splits=("train",)) / "train"


def _count_extractions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import attmask.eval.context as context

    calls: list[int] = []
    real = context.extract_features

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(context, "extract_features", counting)
    return calls


def test_hit_then_miss_on_every_change(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_extractions(monkeypatch)
    ctx = RunContext(_args(tmp_path))
    first = ctx.features(index_image_folder(folder), T32, "cls")
    again = RunContext(_args(tmp_path)).features(index_image_folder(folder), T32, "cls")
    assert len(calls) == 1
    np.testing.assert_array_equal(first.features, again.features)
    np.testing.assert_array_equal(first.paths, again.paths)

    RunContext(_args(tmp_path)).features(index_image_folder(folder), T32, "cls4")  # layer set
    assert len(calls) == 2
    RunContext(_args(tmp_path)).features(index_image_folder(folder), EvalTransform(resize=36, crop=32), "cls")
    assert len(calls) == 3  # transform
    RunContext(_args(tmp_path, ckpt="random:vit_d64_l2_h2_patch8_32")).features(
        index_image_folder(folder), T32, "cls")
    assert len(calls) == 3  # same checkpoint: still a hit
    args = _args(tmp_path)
    args.seed = 1  # a different random backbone is a different checkpoint
    RunContext(args).features(index_image_folder(folder), T32, "cls")
    assert len(calls) == 4
    # touching a file (new mtime) changes the dataset fingerprint
    f = next(folder.rglob("*.jpg"))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    RunContext(_args(tmp_path)).features(index_image_folder(folder), T32, "cls")
    assert len(calls) == 5
    # removing a file too
    f.unlink()
    RunContext(_args(tmp_path)).features(index_image_folder(folder), T32, "cls")
    assert len(calls) == 6


def test_no_cache_always_recomputes_and_writes_nothing(folder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_extractions(monkeypatch)
    for _ in range(2):
        RunContext(_args(tmp_path, no_cache=True)).features(index_image_folder(folder), T32, "cls")
    assert len(calls) == 2
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-key"])
def test_corrupt_entry_is_detected_and_recomputed(damage: str, folder: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    calls = _count_extractions(monkeypatch)
    good = RunContext(_args(tmp_path)).features(index_image_folder(folder), T32, "cls")
    entries = list((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 1
    entry = entries[0]
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:100])
    elif damage == "garbage":
        entry.write_bytes(b"\0" * 500)
    else:  # a valid npz stored under the wrong key (e.g. a renamed file)
        np.savez(entry, key=np.asarray("0" * 64), features=good.features, labels=good.labels, paths=good.paths)
    again = RunContext(_args(tmp_path)).features(index_image_folder(folder), T32, "cls")
    assert len(calls) == 2
    assert "corrupt" in caplog.text
    np.testing.assert_allclose(again.features, good.features, rtol=1e-6)
    assert FeatureCache(tmp_path / "cache").load(entry.stem) is not None  # rewritten, valid


def test_cache_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attmask.eval.features import FeatureSet

    cache = FeatureCache(tmp_path)
    fs = FeatureSet(features=np.ones((3, 4), np.float32), labels=np.zeros(3, np.int64), paths=np.asarray(["a", "b", "c"]))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        cache.save("ab" * 32, fs)
    assert list(tmp_path.rglob("*")) == [tmp_path / "ab"]  # only the folder: no entry, no temp file


def test_cpu_device_is_used(folder: Path, tmp_path: Path) -> None:
    ctx = RunContext(_args(tmp_path))
    assert ctx.device == torch.device("cpu")
