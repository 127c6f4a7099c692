"""The many-head trainer equals independent torch.optim.SGD heads; evaluation by hand."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from attmask.eval.linear_heads import (
    HeadConfig,
    batch_indices,
    cosine_factor,
    evaluate_heads,
    feature_views,
    init_heads,
    train_heads,
)


def test_feature_views_slice_the_cls4_avgpool_layout() -> None:
    d = 3
    x = torch.arange(5 * d).view(1, -1)  # [cls_L-4 | cls_L-3 | cls_L-2 | cls_L-1 | avgpool_L-1]
    v = feature_views(d)
    assert x[0, v["cls"]].tolist() == [9, 10, 11]
    assert x[0, v["cls4"]].tolist() == list(range(12))
    assert x[0, v["avgpool"]].tolist() == [12, 13, 14]
    assert x[0, v["cls+avgpool"]].tolist() == list(range(9, 15))
    assert x[0, v["cls4+avgpool"]].tolist() == list(range(15))


def test_cosine_factor() -> None:
    assert cosine_factor(0, 10) == 1.0
    assert abs(cosine_factor(5, 10) - 0.5) < 1e-12
    assert abs(cosine_factor(10, 10)) < 1e-12


def test_batched_heads_equal_independent_sgd_heads() -> None:
    """Every head of the sweep trains exactly as a lone nn.Linear under torch.optim.SGD would."""
    gen = torch.Generator().manual_seed(0)
    d, n, c = 4, 90, 3
    x = torch.randn(n, 5 * d, generator=gen)
    y = torch.randint(0, c, (n,), generator=gen)
    views = feature_views(d)
    configs = [HeadConfig(f, lr, wd) for f in ("cls", "cls4+avgpool") for lr in (0.05, 0.5) for wd in (0.0, 0.1)]
    iterations, batch = 7, 32
    bank = train_heads(x, y, configs, views, num_classes=c, iterations=iterations, batch_size=batch,
                       generator=torch.Generator().manual_seed(1))
    # replay: same initial weights (same generator draws) and same batches
    init = init_heads(configs, views, c, torch.Generator().manual_seed(1))
    order_gen = torch.Generator().manual_seed(1)
    init_heads(configs, views, c, order_gen)  # advance exactly as train_heads did
    batches = list(batch_indices(n, batch, iterations, order_gen))
    for i, cfg in enumerate(configs):
        f = cfg.feature_set
        row = init.groups[f].index(i)
        head = torch.nn.Linear(init.weights[f].shape[1], c)
        with torch.no_grad():
            head.weight.copy_(init.weights[f][row].t())
            head.bias.copy_(init.biases[f][row])
        opt = torch.optim.SGD([{"params": [head.weight], "weight_decay": cfg.weight_decay},
                               {"params": [head.bias], "weight_decay": 0.0}], lr=cfg.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=0.0)
        for idx in batches:
            loss = F.cross_entropy(head(x[idx][:, views[f]]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        torch.testing.assert_close(bank.weights[f][row], head.weight.detach().t(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bank.biases[f][row], head.bias.detach(), rtol=1e-5, atol=1e-6)


def test_evaluate_heads_counts_hits_by_hand() -> None:
    views = {"a": slice(0, 2)}
    bank = init_heads([HeadConfig("a", 0.1, 0.0), HeadConfig("a", 0.2, 0.0)], views, 3, torch.Generator())
    with torch.no_grad():
        bank.weights["a"].zero_()
        bank.weights["a"][0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # head 0: class = argmax(x)
        bank.biases["a"][1] = torch.tensor([0.5, 0.0, 1.0])  # head 1: always ranks [2, 0, 1]
    x = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [5.0, 4.0]])
    y = torch.tensor([0, 1, 2, 0])
    acc = evaluate_heads(bank, x, y, topk=(1, 2), max_elements=6)  # one row per chunk
    assert acc[1].tolist() == [75.0, 25.0]
    assert acc[2][1].item() == 75.0  # rows 0, 2, 3 have their label among {2, 0}


def test_views_of_the_combined_layer_set_equal_the_layer_sets() -> None:
    from attmask.eval.checkpoint import load_backbone
    from attmask.eval.features import forward_layers

    model = load_backbone("random:vit_d64_l4_h2_patch8_32", seed=0).model
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        combined = forward_layers(model, x, "cls4+avgpool")
        for name, view in feature_views(64).items():
            if name != "cls4+avgpool":
                torch.testing.assert_close(combined[:, view], forward_layers(model, x, name))


def test_rows_train_and_evaluate_like_a_copied_subset() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 10, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    rows = torch.tensor([1, 4, 5, 9, 20, 33, 34, 40, 41, 49])
    views, configs = feature_views(2), [HeadConfig("cls4", 0.1, 0.0), HeadConfig("cls", 0.3, 1e-3)]
    kw = dict(num_classes=3, iterations=5, batch_size=4)
    a = train_heads(x, y, configs, views, generator=torch.Generator().manual_seed(1), rows=rows, **kw)
    b = train_heads(x[rows], y[rows], configs, views, generator=torch.Generator().manual_seed(1), **kw)
    assert all(torch.equal(a.weights[f], b.weights[f]) for f in a.weights)
    assert torch.equal(evaluate_heads(a, x, y, rows=rows)[1], evaluate_heads(a, x[rows], y[rows])[1])
