"""Exact resume: stopped after k steps and resumed equals uninterrupted, bitwise on CPU (tiny scale).

The runs differ in how the data is loaded too (no worker vs. one worker process): samples are seeded
by (seed, epoch, index), so the result must not depend on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attmask.eval.checkpoint import read_checkpoint_file
from attmask.pretrain.runlog import read_log
from attmask.pretrain.trainer import Trainer

from .helpers import tiny


def assert_same_state(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("overrides", [
    dict(pred_shape="attmask_hint"),  # masks from the teacher's attention, in the step
    dict(pred_shape="block", pred_ratio=[0.0, 0.3], pred_ratio_var=[0.0, 0.2], loss="dino"),  # loader masks
], ids=["attmask_hint-ibot", "block-dino"])
def test_stop_and_resume_equals_uninterrupted(tmp_path: Path, data_root: Path, overrides: dict) -> None:
    cfg = tiny(**overrides)  # 40 images, batch 8: 5 iterations per epoch, 2 epochs
    full = Trainer(cfg, tmp_path / "full", progress=False).run()
    assert full.complete and full.step == 10
    cfg_workers = tiny(**overrides, num_workers=1)
    first = Trainer(cfg_workers, tmp_path / "split", progress=False, max_steps=3).run()  # mid-epoch
    assert first.step == 3 and not first.complete
    mid = read_checkpoint_file(tmp_path / "split" / "checkpoint.pth")
    assert mid["attmask"]["step"] == 3 and mid["epoch"] == 0
    # resumed without TensorBoard (a logging switch may change on resume; the arithmetic may not)
    second = Trainer(tiny(**overrides, num_workers=1, tensorboard=False), tmp_path / "split", progress=False,
                     resume=True, max_steps=7).run()
    assert second.step == 7  # crosses the epoch boundary
    third = Trainer(cfg, tmp_path / "split", progress=False, resume=True).run()
    assert third.complete and third.step == 10
    a = read_checkpoint_file(tmp_path / "full" / "checkpoint.pth")
    b = read_checkpoint_file(tmp_path / "split" / "checkpoint.pth")
    for key in ("student", "teacher", "optimizer", "ibot_loss" if cfg.loss == "ibot" else "dino_loss", "epoch"):
        assert_same_state(a[key], b[key], key)
    # the training logs agree too (the resumed run rewrote nothing twice)
    strip = ("images_per_s", "mem_mb")
    la = [{k: v for k, v in e.items() if k not in strip} for e in read_log(tmp_path / "full", "train")]
    lb = [{k: v for k, v in e.items() if k not in strip} for e in read_log(tmp_path / "split", "train")]
    assert la == lb


def test_resume_refuses_a_changed_configuration(tmp_path: Path, data_root: Path) -> None:
    from attmask.eval.errors import BadInput

    Trainer(tiny(tensorboard=False), tmp_path, progress=False, max_steps=2).run()
    assert not (tmp_path / "tb").exists() and (tmp_path / "log.jsonl").is_file()  # tensorboard=false: JSON lines only
    with pytest.raises(BadInput, match="configuration differs.*lr"):
        Trainer(tiny(lr=1e-3), tmp_path, progress=False, resume=True).run()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, data_root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from attmask.pretrain import losses
    from attmask.pretrain.cli import main

    calls = {"n": 0}
    forward = losses.iBOTLoss.forward

    def poisoned(self, *args, **kwargs):  # the 8th iteration's loss is NaN (epoch 1; epoch 0 saved)
        out = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(losses.iBOTLoss, "forward", poisoned)
    cfg = tmp_path / "tiny.yaml"
    from .helpers import TINY

    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the INFO log lines: one line
    assert err.startswith("attmask-pretrain train: failed:")
    assert "loss is nan at step 7 (epoch 1)" in err and "last good checkpoint" in err
    ck = read_checkpoint_file(out / "checkpoint.pth")
    assert ck["attmask"]["step"] == 5  # the end of epoch 0, untouched
    stop = read_log(out, "stop")
    assert stop[-1]["reason"] == "non-finite loss" and stop[-1]["step"] == 7
