"""Checkpoint import: every format round-trips, features equal an independent reference ViT,
and every bad input is one stderr line with exit status 2."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attmask.eval.arch import build_vit, spec_from_name
from attmask.eval.checkpoint import load_backbone
from attmask.eval.cli import main
from attmask.eval.errors import BadInput
from attmask.eval.features import forward_layers, intermediate_layers

from .reference_vit import RefViT

DIM, DEPTH, HEADS, PATCH, IMG = 192, 3, 3, 8, 32


@pytest.fixture(scope="module")
def ref() -> RefViT:
    torch.manual_seed(0)
    model = RefViT(IMG, PATCH, DIM, DEPTH, HEADS).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor cannot go unnoticed
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


def _head(prefix: str) -> dict[str, torch.Tensor]:
    """An iBOT / DINO projection head with the aliased weight-normalised last layers."""
    return {
        f"{prefix}mlp.0.weight": torch.randn(64, DIM), f"{prefix}mlp.0.bias": torch.randn(64),
        f"{prefix}last_layer.weight_g": torch.ones(100, 1), f"{prefix}last_layer.weight_v": torch.randn(100, 64),
        f"{prefix}last_layer2.weight_g": torch.ones(100, 1), f"{prefix}last_layer2.weight_v": torch.randn(100, 64),
    }


def _formats(ref: RefViT) -> dict[str, object]:
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    args = argparse.Namespace(arch="vit_custom", patch_size=PATCH, out_dim=100, num_heads=HEADS)
    student = {f"module.backbone.{k}": v + 1.0 for k, v in sd.items()}  # different weights than the teacher
    student.update({f"module.{k}": v for k, v in _head("head.").items()})
    student["module.backbone.masked_embed"] = torch.zeros(DIM)
    teacher = {f"backbone.{k}": v for k, v in sd.items()}
    teacher.update(_head("head."))
    ibot = {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "epoch": 3, "args": args, "ibot_loss": {"center": torch.zeros(1, 100), "center2": torch.zeros(1, 1, 100)},
            "fp16_scaler": {"scale": 65536.0}}
    dino = {"student": student, "teacher": teacher, "epoch": 3, "args": args, "dino_loss": {"center": torch.zeros(1, 100)}}
    ours = {"student": student, "teacher": teacher, "epoch": 1, "args": {"arch": "vit_d192_l3_h3", "num_heads": HEADS},
            "attmask": {"version": "0.1.0"}}
    timm_sd = dict(sd)
    timm_sd.update({"head.weight": torch.randn(10, DIM), "head.bias": torch.zeros(10)})
    return {"ibot": ibot, "dino": dino, "attmask": ours, "backbone-export": {"state_dict": sd},
            "backbone-export-prefixed": {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}},
            "model-export": {"model": sd}, "state-dict": sd, "timm": timm_sd}


@pytest.mark.parametrize("fmt", ["ibot", "dino", "attmask", "backbone-export", "backbone-export-prefixed",
                                 "model-export", "state-dict", "timm"])
def test_every_format_round_trips_and_matches_reference(fmt: str, ref: RefViT, images: torch.Tensor,
                                                        tmp_path: Path) -> None:
    path = tmp_path / f"{fmt}.pth"
    torch.save(_formats(ref)[fmt], path)
    bb = load_backbone(str(path))
    expected_fmt = fmt.replace("-prefixed", "")
    assert bb.info.format == expected_fmt
    assert (bb.info.arch.embed_dim, bb.info.arch.depth, bb.info.arch.num_heads) == (DIM, DEPTH, HEADS)
    assert (bb.info.arch.patch_size, bb.info.arch.img_size) == (PATCH, IMG)
    # tensors equal
    for k, v in ref.state_dict().items():
        assert torch.equal(bb.model.state_dict()[k], v), k
    # features equal those of the independently written reference ViT
    with torch.no_grad():
        ours = intermediate_layers(bb.model, images, n=2)
        theirs = ref.get_intermediate_layers(images, n=2)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(forward_layers(bb.model, images, "cls"), ref(images), rtol=1e-5, atol=1e-5)
    if fmt in ("ibot", "dino", "attmask"):
        assert bb.info.key == "teacher"
        assert any(k.startswith("head.last_layer2") for k in bb.info.ignored)


def test_student_key_selects_the_student(ref: RefViT, tmp_path: Path) -> None:
    path = tmp_path / "ibot.pth"
    torch.save(_formats(ref)["ibot"], path)
    bb = load_backbone(str(path), checkpoint_key="student")
    assert bb.info.key == "student"
    assert bb.info.prefixes_stripped == ["module.", "backbone."]
    assert "masked_embed" in bb.info.ignored
    torch.testing.assert_close(bb.model.state_dict()["norm.weight"], ref.state_dict()["norm.weight"] + 1.0)


def test_safetensors(ref: RefViT, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    bb = load_backbone(str(path))
    assert bb.info.format == "state-dict"
    assert torch.equal(bb.model.state_dict()["pos_embed"], ref.state_dict()["pos_embed"])


def test_timm_vit_state_dict_loads() -> None:
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    sd = model.state_dict()
    from attmask.eval.arch import spec_from_state_dict
    from attmask.eval.checkpoint import select_network, strip_to_backbone

    fmt, _, raw, _ = select_network(sd, "x", None)
    backbone, _, ignored = strip_to_backbone(raw)
    assert fmt == "timm" and set(ignored) == {"head.weight", "head.bias"}
    spec = spec_from_state_dict(backbone)
    assert (spec.embed_dim, spec.depth, spec.num_heads, spec.patch_size, spec.img_size) == (192, 12, 3, 16, 224)
    built = build_vit(spec)
    built.load_state_dict(backbone, strict=True)


def test_pos_embed_is_interpolated_for_another_image_size(ref: RefViT, tmp_path: Path) -> None:
    path = tmp_path / "sd.pth"
    torch.save(ref.state_dict(), path)
    bb = load_backbone(str(path), arch=f"vit_d{DIM}_l{DEPTH}_h{HEADS}_patch{PATCH}_64")
    assert bb.model.pos_embed.shape == (1, 1 + 64, DIM)
    assert any("interpolated" in n for n in bb.info.notes)
    torch.testing.assert_close(bb.model.pos_embed[:, 0], ref.pos_embed[:, 0])  # CLS position kept


def test_random_backbone_is_seeded_and_labelled() -> None:
    a = load_backbone("random:vit_tiny", patch_size=8, seed=3)
    b = load_backbone("random:vit_tiny", patch_size=8, seed=3)
    c = load_backbone("random:vit_tiny", patch_size=8, seed=4)
    assert torch.equal(a.model.pos_embed, b.model.pos_embed)
    assert not torch.equal(a.model.pos_embed, c.model.pos_embed)
    assert a.info.sha256 == b.info.sha256 != c.info.sha256
    assert a.info.format == "random" and a.info.path.startswith("random:vit_tiny_patch8")


# --- bad input: one line on stderr, exit status 2 ------------------------------------------------

def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    return rc, "\n".join(lines)


def _bad_files(ref: RefViT, tmp: Path) -> dict[str, tuple[Path, str]]:
    good = tmp / "good.pth"
    torch.save(_formats(ref)["ibot"], good)
    data = good.read_bytes()
    truncated = tmp / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp / "corrupt.pth"
    corrupt.write_bytes(data[:200] + bytes(reversed(data[200:400])) + data[400:])
    text = tmp / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    empty = tmp / "empty.pth"
    empty.write_bytes(b"")
    evil = tmp / "evil.pth"
    marker = tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"teacher": Evil()}, evil)  # the real attack: a torch archive whose pickle calls os.system
    raw_evil = tmp / "evil-raw.pth"
    with open(raw_evil, "wb") as fh:
        pickle.dump({"teacher": Evil()}, fh, protocol=4)
    torch.save({"state_dict": {"encoder." + k: v for k, v in ref.state_dict().items()}}, tmp / "prefixed.pth")
    torch.save([1, 2, 3], tmp / "list.pth")
    return {
        "missing": (tmp / "nope.pth", "no such file"),
        "truncated": (truncated, "truncated or corrupt"),
        "corrupt": (corrupt, ""),
        "text": (text, "not a PyTorch checkpoint"),
        "empty": (empty, "empty file"),
        "evil": (evil, "refusing to load: it pickles posix.system"),
        "evil-raw": (raw_evil, "not a PyTorch checkpoint"),
        "prefixed": (tmp / "prefixed.pth", "prefix 'encoder.'"),
        "list": (tmp / "list.pth", "not a checkpoint"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "corrupt", "text", "empty", "evil", "evil-raw", "prefixed",
                                  "list"])
def test_bad_checkpoint_is_one_line_exit_2(case: str, ref: RefViT, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, needle = _bad_files(ref, tmp_path)[case]
    rc, err = _cli(["inspect", "--ckpt", str(path)], capsys)
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and needle in err
    assert not (tmp_path / "pwned").exists()


def test_wrong_key_and_wrong_arch(ref: RefViT, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ibot.pth"
    torch.save(_formats(ref)["ibot"], path)
    rc, err = _cli(["inspect", "--ckpt", str(path), "--checkpoint-key", "ema"], capsys)
    assert rc == 2 and "no 'ema' entry" in err and "teacher" in err and len(err.splitlines()) == 1
    rc, err = _cli(["inspect", "--ckpt", str(path), "--arch", "vit_small", "--patch-size", str(PATCH)], capsys)
    assert rc == 2 and "wrong architecture" in err or "do not match" in err
    # a checkpoint missing a backbone tensor is refused (strict), naming the key
    sd = ref.state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    torch.save({"state_dict": sd}, tmp_path / "partial.pth")
    rc, err = _cli(["inspect", "--ckpt", str(tmp_path / "partial.pth")], capsys)
    assert rc == 2 and "missing [blocks.1.mlp.fc2.bias]" in err


def test_inspect_prints_what_it_found(ref: RefViT, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ibot.pth"
    torch.save(_formats(ref)["ibot"], path)
    assert main(["inspect", "--ckpt", str(path)]) == 0
    out = capsys.readouterr().out
    for needle in ("format:     ibot", "key:        teacher", "embed_dim=192", "depth=3", "heads=3",
                   "patch=8", "sha256:", "head.* (6)", "'backbone.'"):
        assert needle in out, needle


def test_cli_subprocess_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_text("garbage")
    proc = subprocess.run([sys.executable, "-m", "attmask.eval.cli", "inspect", "--ckpt", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"attmask-eval inspect: error: {bad}: not a PyTorch checkpoint (")


def test_spec_from_name_rejects_unknown() -> None:
    with pytest.raises(BadInput, match="unknown architecture"):
        spec_from_name("resnet50")
