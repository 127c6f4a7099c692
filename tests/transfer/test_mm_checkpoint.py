"""mmengine checkpoints load through the restricted unpickler; anything else is refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from attmask.transfer.mm_checkpoint import load_checkpoint_file, restricted_local_loader


class _RunsCode:
    def __reduce__(self):  # what a malicious checkpoint does: call something on load
        return (os.system, ("echo pwned > /dev/null",))


class _ReadsAttribute:
    def __reduce__(self):  # getattr is admitted for HistoryBuffer's statistics methods only
        return (getattr, (dict, "fromkeys"))


def test_loads_what_mmengine_saves(tmp_path: Path) -> None:
    from mmengine.logging import HistoryBuffer

    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = {"state_dict": {"w": torch.ones(2)}, "meta": {"seed": np.int64(3), "rng": np.arange(3)},
            "message_hub": {"log_scalars": {"loss": buf}}}
    path = tmp_path / "ok.pth"
    torch.save(ckpt, path)
    loaded = load_checkpoint_file(str(path), map_location="cpu")
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert loaded["message_hub"]["log_scalars"]["loss"].current() == 1.5
    assert loaded["meta"]["rng"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("payload", [_RunsCode(), _ReadsAttribute()], ids=["os.system", "getattr(dict)"])
def test_refuses_other_globals(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {}, "meta": payload}, path)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_checkpoint_file(str(path), map_location="cpu")


def test_mmengine_uses_it_within_the_block(tmp_path: Path) -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    path = tmp_path / "bad.pth"
    torch.save({"meta": _RunsCode()}, path)
    default = CheckpointLoader._get_checkpoint_loader(str(path))
    with restricted_local_loader():
        with pytest.raises(pickle.UnpicklingError):
            CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert CheckpointLoader._get_checkpoint_loader(str(path)) is default
