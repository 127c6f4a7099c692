"""Fine-tuning: the DeiT recipe end to end on CPU (reduced), learning, resume, defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attmask.eval import finetune, records
from attmask.eval.cli import main
from attmask.eval.finetune_recipe import FinetuneRecipe

pytestmark = pytest.mark.usefixtures("single_thread")

REDUCED = ["--dataset", "cifar10-mini", "--resize", "32", "--crop", "32", "--subset", "10", "--test-subset", "10",
           "--epochs", "2", "--warmup-epochs", "1", "--train-batch-size", "50", "--batch-size", "25",
           "--eval-freq", "1", "--num-workers", "0"]


def _record(out: Path) -> dict:
    (path,) = out.glob("finetune-*[0-9a-f].json")
    record = json.loads(path.read_text())
    records.validate(record)
    return record


def test_defaults_are_the_attmask_readme_run() -> None:
    r = FinetuneRecipe()
    assert (r.epochs, r.train_batch_size, r.base_lr) == (500, 900, 7.5e-6)  # 6 GPUs x 150, --lr 7.5e-6
    assert r.lr == pytest.approx(7.5e-6 * 900 / 512)
    assert (r.auto_augment, r.mixup, r.cutmix, r.label_smoothing, r.random_erase, r.drop_path) == \
        ("rand-m9-mstd0.5-inc1", 0.8, 1.0, 0.1, 0.25, 0.1)
    assert (r.weight_decay, r.warmup_epochs, r.min_lr, r.model_ema_decay) == (0.05, 5, 1e-5, 0.99996)


def test_full_recipe_runs_and_resumes_to_the_same_result(trained_backbone: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every recipe piece on (RandAugment, mixup/cutmix, smoothing, erasing, drop-path, EMA, repeated
    augmentation, layer decay); a run killed after epoch 1 resumes to the uninterrupted result."""
    args = ["finetune", "--ckpt", str(trained_backbone), *REDUCED, "--layer-decay", "0.75", "--lr", "5e-4"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    straight = _record(tmp_path / "straight")
    assert set(straight["metrics"]) == {"top1_best", "top1_last"}
    p = straight["protocol"]
    assert p["reference"] is False and p["recipe"]["layer_decay"] == 0.75 and p["input_size"] == 32
    history = json.loads((tmp_path / "straight" / straight["artifacts"]["history"]).read_text())
    assert [h["epoch"] for h in history["history"]] == [1, 2] and "ema_top1_last" in history
    assert straight["metrics"]["top1_last"] == history["history"][-1]["top1"]

    real = finetune.evaluate
    calls = {"n": 0}

    def dies_in_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(finetune, "evaluate", dies_in_second_epoch)
    out = tmp_path / "resumed"
    assert main([*args, "--out", str(out)]) == 130
    monkeypatch.setattr(finetune, "evaluate", real)
    assert main([*args, "--out", str(out)]) == 0
    assert _record(out)["metrics"] == straight["metrics"]


def test_fine_tuning_learns_from_the_trained_backbone(trained_backbone: Path, tmp_path: Path) -> None:
    """Light settings (no mixup / RandAugment / erasing): 500 images, 3 epochs of 5 steps.

    Measured: top-1 on 200 test images 29.0 after epoch 1 and 32.0 after epoch 3 (chance: 10);
    the threshold asks for 20.
    """
    out = tmp_path / "light"
    rc = main(["finetune", "--ckpt", str(trained_backbone), "--dataset", "cifar10-mini", "--resize", "32",
               "--crop", "32", "--subset", "50", "--test-subset", "20", "--epochs", "3", "--warmup-epochs", "0",
               "--lr", "2e-3", "--min-lr", "1e-6", "--train-batch-size", "100", "--batch-size", "50",
               "--mixup", "0", "--cutmix", "0", "--aa", "none", "--reprob", "0", "--no-repeated-aug",
               "--no-model-ema", "--num-workers", "0", "--out", str(out)])
    assert rc == 0
    record = _record(out)
    assert record["metrics"]["top1_last"] >= 20.0
    assert record["metrics"]["top1_best"] >= record["metrics"]["top1_last"]  # evaluated at epochs 1 and 3


def test_odd_step_batches_with_mixup_are_bad_input(trained_backbone: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["finetune", "--ckpt", str(trained_backbone), *REDUCED, "--train-batch-size", "51",
               "--out", str(tmp_path / "odd")])
    assert rc == 2 and "no even batch size divides the 51 images" in capsys.readouterr().err


def test_two_processes_under_torchrun(trained_backbone: Path, tmp_path: Path) -> None:
    """DDP fine-tuning and the reference linear probe (gradients averaged by hand) on 2 gloo processes:
    each writes one valid record from rank 0, with the test split evaluated in shards and summed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    small = ["--dataset", "cifar10-mini", "--resize", "32", "--crop", "32", "--subset", "4", "--test-subset", "5",
             "--num-workers", "0", "--device", "cpu", "--ckpt", str(trained_backbone)]
    runs = {
        "finetune": ["finetune", *small, "--epochs", "1", "--train-batch-size", "20", "--batch-size", "5",
                     "--no-repeated-aug"],
        "linear": ["linear", *small, "--mode", "reference", "--epochs", "1", "--train-batch-size", "20",
                   "--batch-size", "10"],
    }
    for task, argv in runs.items():
        out = tmp_path / task
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "attmask.eval.cli", *argv, "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (path,) = out.glob(f"{task}-cifar10-mini-*[0-9a-f].json")
        record = json.loads(path.read_text())
        records.validate(record)
        for value in record["metrics"].values():
            assert abs(value / 2 - round(value / 2)) < 1e-9  # k / 50 images in percent: even numbers


def test_micro_batches_divide_the_step() -> None:
    from attmask.eval.errors import BadInput
    from attmask.eval.resume import micro_batch_size

    assert micro_batch_size(900, 128, even=True) == 100  # the README step of 900 in loads of 100
    assert micro_batch_size(900, 150, even=True) == 150
    assert micro_batch_size(2048, 128) == 128 and micro_batch_size(50, 64) == 50 and micro_batch_size(7, 4) == 1
    with pytest.raises(BadInput):
        micro_batch_size(7, 4, even=True)
