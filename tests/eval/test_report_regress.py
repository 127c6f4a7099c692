"""report (md / csv / png) and regress (pass, fail, missing, ambiguous, protocol constraints)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import yaml

from attmask.eval import records
from attmask.eval.cli import main
from attmask.eval.regress import evaluate, load_reference
from attmask.eval.resources import available


def _record(task: str, dataset: str, metrics: dict[str, float], protocol: dict, ckpt: str = "a") -> dict:
    protocol = {**protocol, "reference": protocol.get("reference", True)}
    return {
        "schema": "attmask.record/1", "task": task, "dataset": dataset, "split": "val", "metrics": metrics,
        "protocol": protocol, "protocol_hash": records.protocol_hash(protocol),
        "checkpoint": {"path": f"/ck/{ckpt}.pth", "sha256": "0" * 64, "key": "teacher", "arch": "vit_small_patch16_224"},
        "env": {"python": "3.11", "torch": "2", "timm": "1", "faiss": None, "mm": {}, "git": None, "device": "cpu"},
        "cost": {"wall_s": 1.0, "images": 10, "peak_mem_mb": 1.0},
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:01+00:00",
    }


def _write(run_dir: Path, rec: dict) -> Path:
    return records.write(run_dir, rec)


def _reference(tmp: Path, entries: list[dict]) -> Path:
    path = tmp / "ref.yaml"
    path.write_text(yaml.safe_dump({"setting": "test", "entries": entries}))
    return path


ENTRY = {"task": "knn", "dataset": "imagenet", "metric": "top1@k20", "value": 72.5, "tolerance": 0.5,
         "source": "poster", "protocol": {"subset": None}}


def test_regress_pass_and_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _write(run, _record("knn", "imagenet", {"top1@k20": 72.9}, {"subset": None, "k": 20}))
    ref = _reference(tmp_path, [ENTRY])
    assert main(["regress", "--reference", str(ref), str(run)]) == 0
    assert "PASS" in capsys.readouterr().out
    ref = _reference(tmp_path, [{**ENTRY, "value": 73.5}])
    assert main(["regress", "--reference", str(ref), str(run)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "72.90 vs 73.50" in out


def test_regress_missing_when_constraint_not_met(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _write(run, _record("knn", "imagenet", {"top1@k20": 72.5}, {"subset": 260}))  # a 20% run
    _write(run, _record("knn", "imagenet-mini", {"top1@k20": 72.5}, {"subset": None}))  # another dataset
    assert main(["regress", "--reference", str(_reference(tmp_path, [ENTRY])), str(run)]) == 1
    assert "MISSING" in capsys.readouterr().out


def test_regress_ambiguous_when_two_records_disagree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, _record("knn", "imagenet", {"top1@k20": 72.5}, {"subset": None, "backend": "faiss"}))
    _write(b, _record("knn", "imagenet", {"top1@k20": 72.7}, {"subset": None, "backend": "torch"}))
    assert main(["regress", "--reference", str(_reference(tmp_path, [ENTRY])), str(a), str(b)]) == 1
    assert "AMBIGUOUS" in capsys.readouterr().out
    # two records agreeing on the value are not ambiguous
    c = tmp_path / "c"
    _write(c, _record("knn", "imagenet", {"top1@k20": 72.5}, {"subset": None, "backend": "torch"}))
    assert main(["regress", "--reference", str(_reference(tmp_path, [ENTRY])), str(a), str(c)]) == 0


def test_nested_constraints_and_floats(tmp_path: Path) -> None:
    _write(tmp_path, _record("retrieval", "roxford5k", {"mAP_medium": 33.0},
                             {"query_crop": False, "imsize": 512, "multiscale": True, "scales": {"n": 3}}))
    refs = [{"task": "retrieval", "dataset": "roxford5k", "metric": "mAP_medium", "value": 33.5, "tolerance": 1.5,
             "source": "x", "protocol": {"query_crop": False, "imsize": 512, "scales.n": 3}}]
    _, loaded = load_reference(str(_reference(tmp_path, refs)))
    outcomes = evaluate(loaded, list(records.find_records(tmp_path)))
    assert [o.status for o in outcomes] == ["pass"]
    refs[0]["protocol"]["query_crop"] = True
    _, loaded = load_reference(str(_reference(tmp_path, refs)))
    assert [o.status for o in evaluate(loaded, list(records.find_records(tmp_path)))] == ["missing"]


@pytest.mark.parametrize("content, needle", [
    ("entries: []", "non-empty 'entries'"),
    ("entries: [{task: knn}]", "missing"),
    ("entries: [{task: knn, dataset: x, metric: m, value: abc, tolerance: 1, source: s}]", "must be numbers"),
    ("entries: [: bad", "invalid YAML"),
])
def test_malformed_reference_is_bad_input(content: str, needle: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.yaml"
    ref.write_text(content)
    (tmp_path / "run").mkdir()
    assert main(["regress", "--reference", str(ref), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(ref) in err[0]


def test_every_shipped_reference_file_loads() -> None:
    names = available("reported")
    assert "ibot_attmask_hint_vits16_in1k_100ep" in names and "ibot_attmask_high_vits16_in1k20_100ep" in names
    values = {}
    for name in names:
        _, refs = load_reference(name)
        for r in refs:
            values[(name, r.task, r.dataset, r.metric)] = r.value
    # spot checks against the poster (PROTOCOLS.md §5)
    assert values[("ibot_attmask_high_vits16_in1k20_100ep", "knn", "imagenet", "top1@k20")] == 49.7
    assert values[("ibot_attmask_hint_vits16_in1k_100ep", "fewshot", "imagenet", "top1@n1")] == 37.6
    assert values[("ibot_vits16_in1k_100ep", "davis", "davis2017", "J&F_mean")] == 60.5
    assert values[("ibot_attmask_vits16_in1k_100ep_transfer", "retrieval", "rparis6k", "mAP_hard")] == 31.5


def test_report_tables_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "suite"
    for label, v in (("attmask_high", 40.0), ("random", 30.0)):
        _write(run / label, _record("knn", "cifar10-mini", {"top1@k20": v, "top1@k10": v - 1}, {"k": 20}, label))
        _write(run / label, _record("linear", "cifar10-mini", {"top1": v + 5}, {"mode": "fast", "reference": False},
                                    label))
    # a second protocol variant of knn for one checkpoint shows up as its own row
    _write(run / "random", _record("knn", "cifar10-mini", {"top1@k20": 29.0, "top1@k10": 28.0}, {"k": 21}, "random"))
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "| task | dataset | metric | variant | attmask_high | random |" in md
    assert "| knn | cifar10-mini | top1@k20 |" in md and "40.00" in md and "30.00" in md
    assert "cifar10-mini (non-ref)" in md  # the linear row is marked
    rows = list(csv.reader((run / "report.csv").open()))
    assert rows[0] == ["task", "dataset", "metric", "variant", "attmask_high", "random"]
    knn_k20 = [r for r in rows if r[0] == "knn" and r[2] == "top1@k20"]
    assert len(knn_k20) == 2 and {r[3] for r in knn_k20} != {""}
    png = (run / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # --out elsewhere
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.csv").exists()


def test_report_on_empty_folder_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no records found" in capsys.readouterr().err


def test_record_copy_round_trip(tmp_path: Path) -> None:
    rec = _record("knn", "imagenet", {"top1@k20": 1.0}, {})
    path = _write(tmp_path, copy.deepcopy(rec))
    assert json.loads(path.read_text()) == rec
