"""Suites: several checkpoints × tasks, resume by record, failures reported and the rest continue."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import attmask.eval.suite as suite_mod
from attmask.eval.cli import main
from attmask.eval.errors import BadInput
from attmask.eval.tasks import Task

from .fake_tasks import FAKE_TASKS


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    def get_task(name: str) -> Task:
        if name not in FAKE_TASKS:
            raise BadInput(None, f"unknown task {name!r}")
        return FAKE_TASKS[name]

    monkeypatch.setattr(suite_mod, "get_task", get_task)


def _suite(tmp: Path, tasks: list[dict], checkpoints: list[dict] | None = None) -> Path:
    path = tmp / "suite.yaml"
    checkpoints = checkpoints or [{"label": "narrow", "ckpt": "random:vit_d64_l2_h2_patch8_32"},
                                  {"label": "wide", "ckpt": "random:vit_d128_l2_h2_patch8_32"}]
    path.write_text(yaml.safe_dump({"name": "t", "checkpoints": checkpoints, "tasks": tasks}))
    return path


def test_suite_runs_resumes_and_reports(fake_registry: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _suite(tmp_path, [{"task": "count", "args": {"value": 10}}, {"task": "count", "args": {"value": 20, "reduced": True}}])
    out = tmp_path / "out"
    assert main(["suite", "--suite", str(s), "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.count("done") == 4 and "skipped" not in text
    assert len(list((out / "narrow").glob("count-*.json"))) == 2
    assert len(list((out / "wide").glob("count-*.json"))) == 2
    md = (out / "report.md").read_text()
    assert "| narrow | wide |" in md and "64.00" in md and "128.00" in md
    # second run: everything skipped (same checkpoint sha256 and protocol hash)
    assert main(["suite", "--suite", str(s), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("skipped") == 4


def test_failing_task_is_reported_and_the_rest_continue(fake_registry: None, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    s = _suite(tmp_path, [{"task": "broken"}, {"task": "count"}, {"task": "nonexistent"},
                          {"task": "count", "args": {"bogus-option": 1}}])
    assert main(["suite", "--suite", str(s), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "failed   narrow / broken: RuntimeError: deliberate failure" in out
    assert "done     narrow / count" in out and "done     wide / count" in out
    assert "unknown task 'nonexistent'" in out
    assert "unrecognized arguments: --bogus-option" in out


def test_ckpt_option_replaces_the_suites_checkpoints(fake_registry: None, tmp_path: Path) -> None:
    s = _suite(tmp_path, [{"task": "count"}])
    assert main(["suite", "--suite", str(s), "--out", str(tmp_path / "o"), "--ckpt", "random:vit_d64_l2_h2_patch8_32"]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir() if p.is_dir()] == ["random-vit_d64_l2_h2_patch8_32"]


@pytest.mark.parametrize("content, needle", [
    ({"tasks": []}, "non-empty 'tasks'"),
    ({"tasks": [{"task": "count"}]}, "no checkpoints"),
    ({"tasks": [{"task": "count"}], "checkpoints": [{"label": "a"}]}, "exactly one of 'ckpt' / 'pretrain'"),
    ({"tasks": [{"task": "count"}], "checkpoints": [{"label": "a", "ckpt": "x"}, {"label": "a", "ckpt": "y"}]}, "unique"),
])
def test_malformed_suite_is_bad_input(content: dict, needle: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(content))
    assert main(["suite", "--suite", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_unknown_suite_name_lists_shipped_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", "--suite", "no_such_suite", "--out", str(tmp_path)]) == 2
    assert "not a file and not a shipped suites preset" in capsys.readouterr().err


def test_args_to_argv() -> None:
    assert suite_mod.args_to_argv({"dataset": "x", "no_cache": True, "ks": [10, 20], "skip": False, "n": None}) == [
        "--dataset", "x", "--no-cache", "--ks", "10", "20"]
    assert suite_mod.args_to_argv({"positional": ["a=1", "b=2"], "config": "c"}) == ["--config", "c", "a=1", "b=2"]
    out = Path("/runs/x")
    assert suite_mod.substitute_out({"data": "{out}/data", "ks": ["{out}"], "n": 3}, out) == {
        "data": "/runs/x/data", "ks": ["/runs/x"], "n": 3}
