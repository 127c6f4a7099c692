"""The attmask-eval command line: every subcommand documents every option and its default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from attmask.eval.cli import build_parser, main
from attmask.eval.tasks import UnavailableTask, discover_tasks


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_option_has_help_with_its_default() -> None:
    subs = _subparsers(build_parser())
    for required in ("inspect", "extract", "suite", "report", "regress", "knn", "linear", "fewshot", "finetune",
                     "retrieval", "retrieval-score", "davis", "davis-score", "coco", "coco-score", "ade20k"):
        assert required in subs, required
    problems = []
    for name, sub in subs.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            if not action.help:
                problems.append(f"{name} {action.option_strings[0]}: no help")
                continue
            is_switch = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)  # --no-x: on by default
            has_default = action.default not in (None, False, argparse.SUPPRESS) and not action.required and not is_switch
            if has_default and "default" not in action.help:
                problems.append(f"{name} {action.option_strings[0]}: default {action.default!r} not documented")
    assert not problems, "\n".join(problems)


def test_registered_tasks_all_import() -> None:
    """Every task registered in pyproject.toml loads (an import error would hide a whole task)."""
    broken = {n: t.error for n, t in discover_tasks().items() if isinstance(t, UnavailableTask)}
    assert not broken, broken


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["inspect"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ckpt" in err[0]


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "attmask-eval"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("attmask ")


def test_unknown_dataset_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from attmask.eval.datasets import classification_split, dataset_dir
    from attmask.eval.errors import BadInput

    with pytest.raises(BadInput, match="unknown dataset 'cifar11'.*known: .*cifar10-mini"):
        dataset_dir("cifar11")
    monkeypatch.setenv("ATTMASK_DATA", str(tmp_path))
    with pytest.raises(BadInput) as exc:
        dataset_dir("imagenet")
    assert str(tmp_path / "imagenet") in str(exc.value) and "imagefolder layout" in str(exc.value)
    (tmp_path / "cifar10" / "train").mkdir(parents=True)
    with pytest.raises(BadInput, match="split 'test' not found.*present: train"):
        classification_split("cifar10", None, None, "test")
    monkeypatch.delenv("ATTMASK_DATA")
    with pytest.raises(BadInput, match=r"\$ATTMASK_DATA is not set"):
        dataset_dir("imagenet")
