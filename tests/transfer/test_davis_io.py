"""DAVIS files: palette, indexed PNGs, the reference's frame size rule, frame normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attmask.eval.errors import BadInput
from attmask.transfer.davis_io import (
    DAVIS_MEAN,
    DAVIS_STD,
    DavisLayout,
    first_frame_labels,
    propagation_size,
    read_frame,
    read_label_png,
    select_sequences,
    voc_palette,
    write_indexed_png,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_palette_is_the_voc_map_of_the_davis_annotations(data_root: Path) -> None:
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:6].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
    with Image.open(data_root / "davis-mini/DAVIS/Annotations/480p/blackswan/00000.png") as im:
        assert im.mode == "P"
        assert np.array(im.getpalette()[: 256 * 3]).reshape(-1, 3).tolist() == pal.tolist()


def test_indexed_png_round_trip(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.uint8)
    write_indexed_png(tmp_path / "m.png", labels)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    assert (read_label_png(tmp_path / "m.png") == labels).all()
    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(BadInput, match="not an indexed PNG"):
        read_label_png(tmp_path / "rgb.png")


@pytest.mark.parametrize("h, w, short, multiple, expected", [
    (480, 854, 480, 64, (480, 832)),  # DAVIS 480p landscape: 854 -> 832
    (854, 480, 480, 64, (832, 480)),  # portrait
    (480, 480, 480, 64, (480, 448)),  # square: the reference's else-branch floors the width
    (480, 854, 96, 64, (96, 128)),  # reduced resolution: 170.8 -> 128
])
def test_propagation_size(h: int, w: int, short: int, multiple: int, expected: tuple[int, int]) -> None:
    assert propagation_size(h, w, short, multiple) == expected


def test_read_frame_resizes_and_normalises(tmp_path: Path) -> None:
    Image.fromarray(np.full((10, 20, 3), 255, dtype=np.uint8)).save(tmp_path / "f.png")
    x = read_frame(tmp_path / "f.png", (6, 8))
    assert x.shape == (3, 6, 8)
    want = (1.0 - torch.tensor(DAVIS_MEAN)) / torch.tensor(DAVIS_STD)
    assert torch.allclose(x[:, 0, 0], want, atol=1e-6)


def test_first_frame_labels_treat_void_as_background(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:4, :4] = 2
    labels[6:, 6:] = 255
    write_indexed_png(tmp_path / "a.png", labels)
    full, small, n = first_frame_labels(tmp_path / "a.png", (2, 2))
    assert n == 2 and full.max() == 2
    assert small.tolist() == [[2, 0], [0, 0]]


def test_layout_and_sequence_selection(data_root: Path, tmp_path: Path) -> None:
    layout = DavisLayout(data_root / "davis-mini" / "DAVIS")
    seqs = layout.sequences()
    assert seqs == ["blackswan", "car-shadow", "drift-chicane", "dog", "libby"]
    assert len(layout.frames("dog")) == 60 and len(layout.annotations("dog")) == 60
    assert select_sequences(seqs, ["dog", "blackswan"], layout.split_file) == ["blackswan", "dog"]
    with pytest.raises(BadInput, match="not in this split"):
        select_sequences(seqs, ["bmx-trees"], layout.split_file)
    with pytest.raises(BadInput, match="split 'test-dev'"):
        DavisLayout(data_root / "davis-mini" / "DAVIS", split="test-dev").sequences()
    with pytest.raises(BadInput, match="no such folder"):
        DavisLayout(tmp_path / "none").sequences()
