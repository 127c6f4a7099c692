"""Layer sets, extraction order and the ``extract`` command on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attmask.eval.checkpoint import load_backbone
from attmask.eval.cli import main
from attmask.eval.datasets import index_image_folder, index_images
from attmask.eval.features import (
    autocast_for,
    default_linear_layers,
    extract_features,
    forward_layers,
    intermediate_layers,
)
from attmask.eval.transforms import EvalTransform

from .helpers import mini_image_folder

SMALL = EvalTransform(resize=32, crop=32)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_backbone("random:vit_d64_l4_h2_patch8_32", seed=0).model


def test_layer_sets_are_the_reference_definitions(model: torch.nn.Module) -> None:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layers = intermediate_layers(model, x, n=4)  # each through the final norm
        last = layers[-1]
        torch.testing.assert_close(forward_layers(model, x, "cls"), last[:, 0])
        torch.testing.assert_close(forward_layers(model, x, "cls4"), torch.cat([o[:, 0] for o in layers], -1))
        torch.testing.assert_close(forward_layers(model, x, "avgpool"), last[:, 1:].mean(1))
        torch.testing.assert_close(forward_layers(model, x, "cls+avgpool"),
                                   torch.cat([last[:, 0], last[:, 1:].mean(1)], -1))
        assert forward_layers(model, x, "patch").shape == (3, 16, 64)
        # the last layer equals timm's own forward_features (which ends with the final norm)
        torch.testing.assert_close(last, model.forward_features(x))
        # intermediate layers are normed: their tokens have ~zero mean over channels before the affine
        assert not torch.allclose(layers[0], model.blocks[0](model.norm_pre(model._pos_embed(model.patch_embed(x)))))


def test_linear_layer_rule() -> None:
    assert default_linear_layers(384) == "cls4"
    assert default_linear_layers(192) == "cls4"
    assert default_linear_layers(768) == "cls+avgpool"


def test_extraction_order_and_batching_do_not_change_features(model: torch.nn.Module, data_root: Path) -> None:
    index = index_image_folder(data_root / "cifar10-mini" / "test", subset=4)
    assert len(index) == 40 and index.paths[0] == "airplane/0000.jpg" and index.labels[-1] == 9
    a = extract_features(model, index, SMALL, "cls", torch.device("cpu"), batch_size=7, progress=False)
    b = extract_features(model, index, SMALL, "cls", torch.device("cpu"), batch_size=40, progress=False)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-5)
    assert a.features.dtype == np.float32 and a.features.shape == (40, 64)
    assert list(a.labels) == [i // 4 for i in range(40)]


def test_subset_and_offset_follow_sorted_order(data_root: Path) -> None:
    full = index_image_folder(data_root / "cifar10-mini" / "train")
    assert len(full) == 10000
    sub = index_image_folder(data_root / "cifar10-mini" / "train", subset=5, offset=10)
    assert sub.paths[:5] == tuple(f"airplane/{i:04d}.jpg" for i in range(10, 15))
    assert len(sub) == 50


def test_extract_command_writes_sorted_relative_paths(data_root: Path, tmp_path: Path) -> None:
    folder = mini_image_folder(data_root, tmp_path / "imgs")
    out = tmp_path / "run"
    rc = main(["extract", "--ckpt", "random:vit_d64_l4_h2_patch8_32", "--images", str(folder / "test"),
               "--resize", "32", "--crop", "32", "--out", str(out), "--num-workers", "0", "--layers", "cls4"])
    assert rc == 0
    with np.load(out / "features.npz") as z:
        feats, paths = z["features"], z["paths"]
    expected = sorted(p.relative_to(folder / "test").as_posix() for p in (folder / "test").rglob("*.jpg"))
    assert list(paths) == expected and paths.dtype.kind == "U"
    assert feats.shape == (9, 4 * 64) and feats.dtype == np.float32
    assert index_images(folder / "test").paths == tuple(expected)


def test_extract_rejects_two_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["extract", "--ckpt", "random:vit_tiny", "--images", str(tmp_path), "--dataset", "cifar10-mini",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "exactly one of --images" in capsys.readouterr().err


def test_unreadable_image_is_bad_input(model: torch.nn.Module, tmp_path: Path, data_root: Path) -> None:
    folder = mini_image_folder(data_root, tmp_path / "imgs", per_class=1, splits=("test",))
    (folder / "test" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    from attmask.eval.errors import BadInput

    with pytest.raises(BadInput, match="broken.jpg: cannot read image"):
        extract_features(model, index_image_folder(folder / "test"), SMALL, "cls", torch.device("cpu"), progress=False)


def test_autocast_follows_the_amp_switch() -> None:
    """--no-amp means fp32 on CUDA too (fine-tuning's evaluation used fp16 regardless before)."""
    assert autocast_for(torch.device("cuda"), enabled=False)._enabled is False
    assert autocast_for(torch.device("cpu"))._enabled is False
