"""Ground-truth pickles: the official files load and are consistent; bad or malicious ones are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from attmask.eval.datasets import registry_name_for
from attmask.eval.errors import BadInput
from attmask.transfer.revisitop_data import load_gnd, open_registered

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name, n_db", [("roxford5k", 4993), ("rparis6k", 6322)])
def test_official_gnd_loads_and_lists_are_disjoint_and_in_range(data_root: Path, name: str, n_db: int) -> None:
    gnd = load_gnd(data_root / "revisitop-gnd" / f"gnd_{name}.pkl")
    assert gnd.n_db == n_db and gnd.n_queries == 70
    assert not set(gnd.qimlist) & set(gnd.imlist)  # queries are not part of the database
    for q in gnd.gnd:
        lists = [q.easy, q.hard, q.junk]
        for arr in lists:
            assert arr.size == 0 or (arr.min() >= 0 and arr.max() < n_db)
        union = np.concatenate(lists)
        assert np.unique(union).size == union.size  # disjoint (and no repeats)
        assert q.bbx is not None and q.bbx[2] > q.bbx[0] and q.bbx[3] > q.bbx[1]
    assert all(q.easy.size + q.hard.size > 0 for q in gnd.gnd)  # every query has Medium positives


def test_official_roxford_facts(data_root: Path) -> None:
    gnd = load_gnd(data_root / "revisitop-gnd" / "gnd_roxford5k.pkl")
    assert gnd.qimlist[0] == "all_souls_000013"
    assert gnd.gnd[0].bbx == pytest.approx((136.5, 34.1, 648.5, 955.7))
    assert sum(q.easy.size == 0 for q in gnd.gnd) == 2  # two queries without Easy positives


def test_mini_sets_open_through_the_registry(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTMASK_DATA", str(data_root))
    ds = open_registered("roxford5k-mini")
    assert ds.name == "roxford5k" and ds.gnd.n_db == 133 and ds.gnd.n_queries == 8
    ds.check_images()
    assert registry_name_for(ds.gnd.path, "revisitop") == "roxford5k-mini"
    with pytest.raises(BadInput, match="not a revisitop"):
        open_registered("davis-mini")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_executes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "gnd_evil.pkl"
    bad.write_bytes(pickle.dumps({"imlist": ["a"], "qimlist": ["q"], "gnd": [_Exploit(marker)]}))
    with pytest.raises(BadInput, match="refusing to unpickle"):
        load_gnd(bad)
    assert not marker.exists()


def _write(tmp_path: Path, obj: object) -> Path:
    p = tmp_path / "gnd_x.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=3))
    return p


@pytest.mark.parametrize("obj, problem", [
    ([1, 2], "expected a dict"),
    ({"imlist": ["a"], "gnd": []}, "missing qimlist"),
    ({"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [5], "junk": []}]}, "outside"),
    ({"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [0], "junk": []}]}, "both easy and hard"),
    ({"imlist": ["a"], "qimlist": ["q", "r"], "gnd": [{"easy": [0], "hard": [], "junk": []}]}, "one entry per query"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": ["x"], "hard": [], "junk": []}]}, "integer indices"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [], "junk": [], "bbx": [5, 5, 1, 1]}]},
     "bbx"),
])
def test_malformed_gnd_is_bad_input(tmp_path: Path, obj: object, problem: str) -> None:
    with pytest.raises(BadInput, match=problem):
        load_gnd(_write(tmp_path, obj))


def test_missing_and_truncated_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        load_gnd(tmp_path / "nope.pkl")
    trunc = tmp_path / "gnd_t.pkl"
    trunc.write_bytes(pickle.dumps({"imlist": ["a"] * 100})[:20])
    with pytest.raises(BadInput, match="gnd_t.pkl: .*truncated"):
        load_gnd(trunc)
