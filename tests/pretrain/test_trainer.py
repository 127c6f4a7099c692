"""A short pre-training run on cifar10-mini: mechanics, logs, checkpoints that the harness loads.

Effectiveness is not asserted here (a few CPU minutes cannot show a k-NN gain reliably, see
../shared/reference/CPU-PRETRAINING.md); the checks are the ones that document calls safe: finite,
decreasing loss, CLS loss below ln K - 0.5, teacher entropy within (0.5, ln K - 0.3), teacher
max-probability below 0.9, and teacher k-NN not below its random initialisation - 3 points.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from attmask.eval.checkpoint import load_backbone, read_checkpoint_file
from attmask.eval.features import forward_layers
from attmask.pretrain.checkpoints import export_backbone
from attmask.pretrain.cli import main
from attmask.pretrain.config import RUN_CONFIG_NAME, dump_config, load_config
from attmask.pretrain.curves import load_curve, plot_curves, summary_table
from attmask.pretrain.runlog import read_log
from attmask.pretrain.trainer import Trainer, TrainSummary, collapse_warning
from attmask.pretrain.visualize import visualize

from .helpers import tiny

# The first 100 iterations of a 100-epoch schedule (lr warmed up over one 25-iteration epoch, teacher
# momentum ~0.95): the regime of a real run's beginning, where the patch loss falls fast.
SHORT = dict(out_dim=256, patch_out_dim=256, subset=80, batch_size_per_gpu=32, epochs=100, warmup_epochs=1,
             lr=2e-3, momentum_teacher=0.95, eval_every=4, log_every=5, saveckp_freq=2)
MAX_STEPS = 100
K = 256


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, TrainSummary]:
    out = tmp_path_factory.mktemp("short-run")
    summary = Trainer(tiny(**SHORT), out, progress=False, max_steps=MAX_STEPS).run()
    return out, summary


def test_short_run_mechanics(short_run: tuple[Path, TrainSummary]) -> None:
    out, summary = short_run
    assert not summary.complete and summary.step == MAX_STEPS and summary.epoch == 4
    train = read_log(out, "train")
    assert [e["step"] for e in train] == list(range(5, MAX_STEPS + 1, 5))
    for e in train:
        for key in ("loss", "cls", "patch", "lr", "wd", "momentum", "mask_ratio", "images_per_s", "mem_mb",
                    "teacher_entropy", "teacher_max_prob", "teacher_spread", "teacher_patch_entropy"):
            assert math.isfinite(e[key]), key
    quarter = len(train) // 4
    first = sum(e["loss"] for e in train[:quarter]) / quarter
    last = sum(e["loss"] for e in train[-quarter:]) / quarter
    assert last < first - 0.5, (first, last)  # decreasing
    epochs = read_log(out, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    end = epochs[-1]
    assert end["cls"] < math.log(K) - 0.5
    assert 0.5 < end["teacher_entropy"] < math.log(K) - 0.3
    assert end["teacher_max_prob"] < 0.9
    assert end["teacher_spread"] > 0.01  # centred CLS logits still differ between crops
    assert 0.5 < end["teacher_patch_entropy"] < math.log(K)
    assert 0.02 < end["mask_ratio"] < 0.3  # gating 0.5 x r ~ U(0.1, 0.5): 15% of tokens on average
    stops = read_log(out, "stop")
    assert stops and stops[-1]["reason"] == "max-steps"
    evals = read_log(out, "eval")
    assert [e["epoch"] for e in evals] == [0, 4]
    assert evals[-1]["top1@k20"] >= evals[0]["top1@k20"] - 3  # not below its random init - 3
    assert summary.knn == {k: v for k, v in evals[-1].items() if "@" in k}
    assert (out / "tb").is_dir() and any((out / "tb").iterdir())


def test_run_folder_holds_its_resolved_configuration(short_run: tuple[Path, TrainSummary]) -> None:
    out, _ = short_run
    loaded = load_config(out / RUN_CONFIG_NAME)
    assert loaded.config == tiny(**SHORT) and not loaded.reference
    text = (out / RUN_CONFIG_NAME).read_text()
    assert text.startswith("# The resolved configuration") and "teacher_temp: 0.04" in text


def test_a_reference_preset_run_keeps_its_reference_flag(tmp_path: Path) -> None:
    """dump_config keeps reference: true, so a run repeated from its config.yaml is still a reference run;
    any change clears it (load_config's rule)."""
    preset = load_config("ibot_attmask_high_vits16_in1k20pct_100ep")
    path = tmp_path / RUN_CONFIG_NAME
    path.write_text(dump_config(preset.config, preset.reference))
    again = load_config(path)
    assert again.reference and again.config == preset.config
    assert not load_config(path, {"epochs": 50}).reference
    path.write_text(dump_config(preset.config, False))
    assert not load_config(path).reference


def test_checkpoints_have_the_reference_layout(short_run: tuple[Path, TrainSummary]) -> None:
    out, _ = short_run
    # the reference's rule: checkpoint{e:04d}.pth after 0-based epoch e when e % saveckp_freq == 0 and e > 0
    assert sorted(p.name for p in out.glob("checkpoint*.pth")) == ["checkpoint.pth", "checkpoint0002.pth"]
    ck = read_checkpoint_file(out / "checkpoint.pth")  # weights_only: plain containers and tensors only
    assert {"student", "teacher", "optimizer", "epoch", "args", "ibot_loss", "attmask"} <= set(ck)
    assert "fp16_scaler" not in ck  # no grad scaler on CPU
    assert ck["epoch"] == 4 and ck["attmask"]["step"] == MAX_STEPS and not ck["attmask"]["complete"]
    assert all(k.startswith(("module.backbone.", "module.head.")) for k in ck["student"])
    assert "module.backbone.masked_embed" in ck["student"]
    assert all(k.startswith(("backbone.", "head.")) for k in ck["teacher"])
    assert "head.last_layer2.weight_v" in ck["teacher"]  # shared head: aliased, as the reference
    args = ck["args"]
    assert isinstance(args, dict) and (args["num_heads"], args["embed_dim"], args["depth"], args["patch_size"]) == (2, 32, 2, 8)
    assert set(ck["ibot_loss"]) == {"center", "center2"} and ck["ibot_loss"]["center2"].shape == (1, 1, K)
    assert ck["attmask"]["version"] == 1


@pytest.mark.parametrize("key", ["teacher", "student"])
def test_harness_loads_every_network(short_run: tuple[Path, TrainSummary], key: str) -> None:
    out, _ = short_run
    for name in ("checkpoint.pth", "checkpoint0002.pth"):
        bb = load_backbone(str(out / name), checkpoint_key=key)
        assert bb.info.format == "attmask" and bb.info.key == key
        assert (bb.info.arch.embed_dim, bb.info.arch.num_heads, bb.info.arch.patch_size) == (32, 2, 8)
        assert bb.info.arch.img_size == 32
    ck = read_checkpoint_file(out / "checkpoint.pth")
    bb = load_backbone(str(out / "checkpoint.pth"), checkpoint_key=key)
    prefix = "backbone." if key == "teacher" else "module.backbone."
    for name, tensor in bb.model.state_dict().items():
        assert torch.equal(tensor, ck[key][prefix + name])


def test_attmask_eval_inspect_reports_our_format(short_run: tuple[Path, TrainSummary],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from attmask.eval.cli import main as eval_main

    out, _ = short_run
    assert eval_main(["inspect", "--ckpt", str(out / "checkpoint.pth"), "--checkpoint-key", "student"]) == 0
    text = capsys.readouterr().out
    assert "format:     attmask" in text and "key:        student" in text and "heads=2" in text


def test_export_writes_a_backbone_the_harness_loads(short_run: tuple[Path, TrainSummary], tmp_path: Path) -> None:
    out, _ = short_run
    path = export_backbone(out / "checkpoint.pth", tmp_path / "backbone.pth")
    bb = load_backbone(str(path))
    assert bb.info.format == "backbone-export" and bb.info.ignored == []
    teacher = load_backbone(str(out / "checkpoint.pth"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(forward_layers(bb.model, x, "cls"), forward_layers(teacher.model, x, "cls"))
    assert main(["export", "--ckpt", str(out / "checkpoint.pth"), "--checkpoint-key", "student",
                 "--out", str(tmp_path / "student.pth")]) == 0
    assert "masked_embed" not in read_checkpoint_file(tmp_path / "student.pth")["state_dict"]


def test_visualize_and_curves(short_run: tuple[Path, TrainSummary], tmp_path: Path, data_root: Path) -> None:
    out, _ = short_run
    images = data_root / "cifar10-mini" / "test" / "cat"
    paths = visualize(str(out / "checkpoint.pth"), images, tmp_path / "vis", limit=2)
    assert len(paths) == 2 and all(p.stat().st_size > 1000 and p.suffix == ".png" for p in paths)
    curve = load_curve(out, "top1@k20", label="high")
    assert curve.epochs == (0, 4)
    png = plot_curves([curve, curve], "top1@k20", tmp_path / "curves" / "knn_curves.png", baseline=28.0)
    assert png.stat().st_size > 1000
    lines = summary_table([curve, curve])
    assert lines[1].startswith("high") and len(lines) == 3
    assert main(["curves", str(out), "--out", str(tmp_path / "c2")]) == 0
    assert (tmp_path / "c2" / "knn_curves.png").is_file()


def test_cli_bad_input_is_one_line(short_run: tuple[Path, TrainSummary], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = short_run
    cases = [
        (["train", "--config", "cifar10mini_cpu_rand", "--out", str(out)], "already holds a checkpoint"),
        (["train", "--config", "cifar10mini_cpu_rand", "--out", str(tmp_path / "new"), "--resume"], "no checkpoint"),
        (["train", "--config", "cifar10mini_cpu_rand", "--out", str(tmp_path / "x"), "learning_rate=1"],
         "unknown pre-training option 'learning_rate'"),
        (["train", "--config", "cifar10mini_cpu_rand", "--out", str(tmp_path / "y"), "precision=fp16"],
         "fp16 needs a CUDA device"),
        (["export", "--ckpt", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "b.pth")], "no such file"),
        (["curves", str(tmp_path)], "no online k-NN entries"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err


def test_collapse_warning_names_uniform_and_one_hot_teachers() -> None:
    cfg = tiny(out_dim=8192, warmup_teacher_temp_epochs=30)
    ln_k = math.log(8192)
    uniform = {"teacher_entropy": 8.84, "cls": 8.92, "teacher_max_prob": 0.002}  # the H200 cifar10-mini runs
    assert collapse_warning(uniform, cfg, 30) is None  # still warming the temperature up
    message = collapse_warning(uniform, cfg, 31)
    assert message and "near uniform" in message and f"{ln_k:.2f}" in message
    one_hot = {"teacher_entropy": 0.2, "cls": 0.3, "teacher_max_prob": 0.97}
    assert "near one-hot" in collapse_warning(one_hot, cfg, 40)
    assert collapse_warning({"teacher_entropy": ln_k - 0.31, "cls": 8.0}, cfg, 40) is None
    assert collapse_warning({"teacher_entropy": 0.51}, cfg, 40) is None
    assert collapse_warning({"loss": 1.0}, cfg, 40) is None  # statistics without the monitor
