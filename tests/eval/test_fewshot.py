"""Few-shot: the AttMask sampler, the shared cores it feeds, margins over random init, both methods."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attmask.eval import records
from attmask.eval.cli import main
from attmask.eval.fewshot import (
    attmask_offsets,
    few_shot_knn,
    few_shot_logreg,
    knn_k,
    per_class_positions,
    summarise,
    window_size,
)
from attmask.eval.knn import knn_accuracy
from attmask.eval.logreg import fit_logreg, logreg_top1, select_and_fit

pytestmark = pytest.mark.usefixtures("single_thread")
RANDOM_VIT = "random:vit_d128_l4_h2_patch4_32"


def test_attmask_subsets() -> None:
    # the AttMask README: --subset_starts 0 5 10 15 20 for nu = 1 and 5, 0..40 for 10, 0..80 for 20
    assert attmask_offsets(1) == attmask_offsets(5) == [0, 5, 10, 15, 20]
    assert attmask_offsets(10) == [0, 10, 20, 30, 40]
    assert attmask_offsets(20) == [0, 20, 40, 60, 80]
    assert [knn_k(s) for s in (1, 5, 10, 20)] == [1, 20, 20, 20]
    assert window_size([1, 5, 10, 20]) == 100 and window_size([1]) == 21


def test_per_class_positions_take_the_sorted_window() -> None:
    labels = np.array([0] * 6 + [1] * 4 + [2] * 5)  # ImageFolder order: classes contiguous
    assert per_class_positions(labels, 2, 2).tolist() == [2, 3, 8, 9, 12, 13]
    with pytest.raises(ValueError, match="class 1 has 4 images"):
        per_class_positions(labels, 3, 2)


def test_few_shot_knn_feeds_the_shared_core() -> None:
    gen = torch.Generator().manual_seed(0)
    pool_x = torch.randn(100, 8, generator=gen).numpy()
    pool_y = np.repeat(np.arange(5), 20)
    test_x, test_y = torch.randn(30, 8, generator=gen).numpy(), np.arange(30) % 5
    accs = few_shot_knn(pool_x, pool_y, test_x, test_y, shots=5, offsets=[0, 5], num_classes=5, backend="torch")
    for offset, acc in zip([0, 5], accs):
        bank = np.concatenate([np.arange(c * 20 + offset, c * 20 + offset + 5) for c in range(5)])
        expected = knn_accuracy(pool_x[bank], pool_y[bank], test_x, test_y, ks=(20,), num_classes=5)["top1@k20"]
        assert acc == expected
    assert accs[0] != accs[1]  # the offsets select different banks
    assert summarise({5: [10.0, 20.0]}) == {"top1@n5": 15.0, "top1@n5_std": 5.0}


def test_logreg_scales_the_penalty_and_selects_on_held_out() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=gen) * 3
    y = np.repeat(np.arange(4), 15)
    x = (centers[torch.from_numpy(y)] + torch.randn(60, 16, generator=gen)).numpy()
    model = fit_logreg(x, y, lam=0.01)
    assert model.C == 100.0 and not model.fit_intercept
    assert logreg_top1(model, x, y) == 100.0  # separable
    # scaling the features does not change the fit: they are L2-normalised first
    assert np.allclose(fit_logreg(x * 7.0, y, lam=0.01).coef_, model.coef_, atol=1e-4)
    fit = select_and_fit(x[::3], y[::3], x[1::3], y[1::3], lambdas=(1e-3, 1.0, 1e3))
    best = max(fit.heldout_top1.values())
    assert fit.heldout_top1[fit.lam] == best
    assert fit.lam == max(lam for lam, acc in fit.heldout_top1.items() if acc == best)  # ties: simpler model
    assert np.allclose(fit.model.coef_, fit_logreg(x[::3], y[::3], fit.lam).coef_)  # fit on the subset only
    accs, lams = few_shot_logreg(x, y, x[1::3], y[1::3], x, y, shots=2, offsets=[0, 5], lambdas=(1e-2, 1.0))
    assert len(accs) == len(lams) == 2 and all(lam in (1e-2, 1.0) for lam in lams)


def _fewshot(ckpt: str, out: Path, dataset: str, *extra: str) -> dict:
    rc = main(["fewshot", "--ckpt", ckpt, "--dataset", dataset, "--out", str(out), "--num-workers", "0", *extra])
    assert rc == 0
    (path,) = out.glob(f"fewshot-{dataset}-*[0-9a-f].json")
    record = json.loads(path.read_text())
    records.validate(record)
    return record


def test_knn_method_beats_random_init(trained_backbone: Path, tmp_path: Path) -> None:
    """cifar10-mini, the AttMask protocol at 32 px; all 2,000 test images classified per subset.

    Measured top1 (mean of 5 subsets), trained fixture vs random init:
    nu=1 22.4 vs 14.1, nu=5 30.8 vs 18.0, nu=10 33.1 vs 18.6, nu=20 36.6 vs 20.4 (+8 to +16);
    thresholds: +3 for one shot, +6 above.
    """
    args = ("cifar10-mini", "--resize", "32", "--crop", "32", "--backend", "torch")
    trained = _fewshot(str(trained_backbone), tmp_path / "t", *args)
    random = _fewshot(RANDOM_VIT, tmp_path / "r", *args)
    p = trained["protocol"]
    assert p["method"] == "knn" and p["k"] == {"1": 1, "5": 20, "10": 20, "20": 20} and p["window"] == 100
    assert p["reference"] is False  # 32 px
    assert set(trained["metrics"]) == {f"top1@n{s}{t}" for s in (1, 5, 10, 20) for t in ("", "_std")}
    assert trained["cost"]["images"] == 1000 + 2000  # only the first 100 images per class are read
    for shots, margin in ((1, 3.0), (5, 6.0), (10, 6.0), (20, 6.0)):
        assert trained["metrics"][f"top1@n{shots}"] >= random["metrics"][f"top1@n{shots}"] + margin, shots
    subsets = json.loads((tmp_path / "t" / trained["artifacts"]["subsets"]).read_text())
    assert len(subsets["top1"]["20"]) == 5
    assert np.mean(subsets["top1"]["20"]) == pytest.approx(trained["metrics"]["top1@n20"])


def test_logreg_method_on_hymenoptera(trained_backbone: Path, tmp_path: Path) -> None:
    record = _fewshot(str(trained_backbone), tmp_path / "h", "hymenoptera", "--resize", "36", "--crop", "32",
                      "--method", "logreg", "--shots", "1", "5", "10", "--lambdas", "0.01", "1")
    p = record["protocol"]
    assert p["method"] == "logreg" and p["selection"] == "heldout" and p["heldout_per_class"] == 20
    assert p["window"] == 50 and p["reference"] is False and record["split"] == "val"
    assert set(record["metrics"]) == {f"top1@n{s}{t}" for s in (1, 5, 10) for t in ("", "_std")}
    assert all(0.0 <= v <= 100.0 for v in record["metrics"].values())
    assert record["cost"]["images"] == 2 * 70 + 153


def test_knn_method_refuses_banks_smaller_than_k(trained_backbone: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["fewshot", "--ckpt", str(trained_backbone), "--dataset", "hymenoptera", "--resize", "36", "--crop", "32",
               "--out", str(tmp_path / "x"), "--shots", "5"])
    assert rc == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "fewer than the k = 20 neighbours" in err[0]
