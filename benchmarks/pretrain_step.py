"""Median training-step time: random vs AttMask-High masking, and CLS-row vs materialised attention.

Ratios in one run, same process, same synthetic batches (data loading excluded):

1. full iBOT step (teacher + masks + student + loss + backward + EMA) with ``rand`` masks (drawn by
   the loader, i.e. outside the step) vs ``attmask_high`` (CLS attention from the teacher pass, masks
   in the step): the AttMask overhead, goal <= 1% (the paper claims zero extra cost). With
   ``--masks equal`` (default) both arms mask every global crop at exactly 30% of its tokens, so the
   student, head and loss do the same work and the difference is AttMask's own; ``--masks as-trained``
   draws them as training does (per-crop ratio and gating), which changes the number of masked tokens,
   hence the patch head's work, from step to step and between the arms;
2. AttMask's own work, timed apart: the mask selection from the teacher's attention (sort, gating);
3. teacher forward on the global crops: plain / with the CLS row beside the attention kernel (what
   AttMask uses) / with the last block materialising the full softmax(QKᵀ/√d) to read its row (the
   reference's way).

Settings: ``--setting cpu`` (192-d, 4 blocks, patch 4, batch 64, 2x32 + 6x16 px; the cifar10-mini
preset's model) or ``--setting gpu`` (ViT-S/16, batch 64, 2x224 + 10x96 px, fp16 autocast, fused SDPA).

    .venv/bin/python benchmarks/pretrain_step.py --setting cpu
    .venv/bin/python benchmarks/pretrain_step.py --setting gpu --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from attmask.pretrain.config import build_config
from attmask.pretrain.masking import draw_pred_ratio, random_mask
from attmask.pretrain.step import make_masks, train_step
from attmask.pretrain.trainer import arch_spec, build_step_state, resolve_attn_impl
from attmask.pretrain.vit import backbone_forward, block_with_cls_row, embed_tokens, full_attention_cls_row

SETTINGS = {
    "cpu": dict(arch="vit_d192_l4_h3", patch_size=4, global_crops_size=32, local_crops_size=16, local_crops_number=6,
                batch_size_per_gpu=64, out_dim=4096, head_hidden_dim=1024),
    "gpu": dict(arch="vit_small", patch_size=16, global_crops_size=224, local_crops_size=96, local_crops_number=10,
                batch_size_per_gpu=64, out_dim=8192, head_hidden_dim=2048),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


EQUAL_RATIO = 0.3


def synthetic_batch(cfg, gen: torch.Generator, equal: bool) -> tuple[torch.Tensor, ...]:
    """Random crops, and ``rand`` masks drawn per crop: 30% of every crop (``equal``), or as the
    loader draws them (ratio 0 or U(0.1, 0.5))."""
    b, g, loc = cfg.batch_size_per_gpu, cfg.global_crops_number, cfg.local_crops_number
    globals_ = torch.randn(b, g, 3, cfg.global_crops_size, cfg.global_crops_size, generator=gen)
    locals_ = torch.randn(b, loc, 3, cfg.local_crops_size, cfg.local_crops_size, generator=gen)
    grid = (cfg.global_crops_size // cfg.patch_size,) * 2

    def ratio() -> float:
        return EQUAL_RATIO if equal else draw_pred_ratio([0.0, 0.3], [0.0, 0.2], gen)

    masks = torch.stack([torch.stack([random_mask(grid, ratio(), gen) for _ in range(g)]) for _ in range(b)])
    return globals_, locals_, masks, torch.zeros(b, dtype=torch.long)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=None, help="override the setting's batch")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--masks", choices=("equal", "as-trained"), default="equal",
                   help="equal: both arms mask 30%% of every global crop (default); as-trained: training's draws")
    p.add_argument("--precision", default="auto")
    p.add_argument("--attn-impl", default="auto")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    base = dict(SETTINGS[a.setting], precision=a.precision, attn_impl=a.attn_impl, epochs=1, warmup_epochs=0,
                warmup_teacher_temp_epochs=1, dataset=None)
    if a.batch:
        base["batch_size_per_gpu"] = a.batch
    gen = torch.Generator().manual_seed(0)
    results: dict[str, float] = {}
    states = {}
    equal = a.masks == "equal"
    for shape in ("rand", "attmask_high"):
        if equal:
            extra = {"pred_ratio": EQUAL_RATIO, "pred_ratio_var": 0.0, "masking_prob": 1.0}
        else:
            extra = {"pred_ratio": [0.0, 0.3], "pred_ratio_var": [0.0, 0.2]} if shape == "rand" else {}
        cfg = build_config({**base, "pred_shape": shape, **extra})
        states[shape] = (cfg, build_step_state(cfg, arch_spec(cfg), device))
    # a few batches with fresh per-crop masks (a real loader draws new ones every step), cycled
    batches = [synthetic_batch(states["rand"][0], gen, equal) for _ in range(4)]
    batch = batches[0]
    counter = {"step": 0}

    def run_step(shape: str) -> None:
        _cfg, st = states[shape]
        counter["step"] += 1
        train_step(st, batches[counter["step"] % len(batches)], step=counter["step"], epoch=0, lr=1e-4, wd=0.04,
                   momentum=0.996)

    # interleave the two so machine load drifts hit both alike
    times: dict[str, list[float]] = {"rand": [], "attmask_high": []}
    for shape in times:
        for _ in range(a.warmup):
            run_step(shape)
    for _ in range(a.steps):
        for shape in times:
            sync(device)
            t = time.perf_counter()
            run_step(shape)
            sync(device)
            times[shape].append(time.perf_counter() - t)
    results["step_rand_s"] = statistics.median(times["rand"])
    results["step_attmask_high_s"] = statistics.median(times["attmask_high"])

    cfg, st = states["attmask_high"]
    vit = st.teacher.backbone
    g = batch[0].transpose(0, 1).reshape(-1, *batch[0].shape[2:]).to(device)

    def teacher(mode: str) -> Callable[[], object]:
        def fn() -> object:
            with torch.no_grad(), st.autocast():
                if mode == "plain":
                    return backbone_forward(vit, g)
                if mode == "row":
                    return backbone_forward(vit, g, cls_attention=True)
                x = embed_tokens(vit, g)
                for blk in list(vit.blocks)[:-1]:
                    x = blk(x)
                last = vit.blocks[-1]
                row = full_attention_cls_row(last.attn, last.norm1(x))
                x, _ = block_with_cls_row(last, x)  # the block output itself
                return vit.norm(x), row
        return fn

    with torch.no_grad(), st.autocast():
        attention = backbone_forward(vit, g, cls_attention=True).cls_attention
    grid = (cfg.global_crops_size // cfg.patch_size,) * 2

    def select() -> object:
        ratio_gen = torch.Generator().manual_seed(counter["step"])
        mask_gen = torch.Generator(device=device).manual_seed(counter["step"])
        counter["step"] += 1
        return make_masks(cfg, 0, attention, None, grid, ratio_gen, mask_gen)

    fns = {mode: teacher(mode) for mode in ("plain", "row", "full")}
    fns["select"] = select
    samples: dict[str, list[float]] = {mode: [] for mode in fns}
    for fn in fns.values():
        for _ in range(a.warmup):
            fn()
    for _ in range(3 * a.steps):  # interleaved, so load drifts hit the three alike
        for mode, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            samples[mode].append(time.perf_counter() - t)
    for mode, times_ in samples.items():
        results[f"teacher_{mode}_s" if mode != "select" else "mask_select_s"] = statistics.median(times_)

    b = cfg.batch_size_per_gpu
    print(f"setting {a.setting} on {device} ({torch.get_num_threads()} threads), {cfg.arch} patch {cfg.patch_size}, "
          f"batch {b}, {cfg.global_crops_number}x{cfg.global_crops_size} + {cfg.local_crops_number}x"
          f"{cfg.local_crops_size} px, {st.amp_dtype or 'fp32'}, {resolve_attn_impl(cfg.attn_impl, device)} attention")
    print(f"step, rand masking          {results['step_rand_s'] * 1e3:9.1f} ms  ({b / results['step_rand_s']:.0f} img/s)")
    print(f"step, attmask_high          {results['step_attmask_high_s'] * 1e3:9.1f} ms  "
          f"({b / results['step_attmask_high_s']:.0f} img/s)")
    overhead = results["step_attmask_high_s"] / results["step_rand_s"] - 1
    print(f"AttMask overhead            {overhead:+9.2%} of the step (goal <= +1%; masks {a.masks})")
    own = results["teacher_row_s"] - results["teacher_plain_s"] + results["mask_select_s"]
    print(f"AttMask's own work          {own * 1e3:9.2f} ms = {own / results['step_rand_s']:+.2%} of the step "
          f"(CLS row {(results['teacher_row_s'] - results['teacher_plain_s']) * 1e3:.2f} ms + mask selection "
          f"{results['mask_select_s'] * 1e3:.2f} ms)")
    print(f"teacher fwd, plain          {results['teacher_plain_s'] * 1e3:9.1f} ms")
    print(f"teacher fwd + CLS row       {results['teacher_row_s'] * 1e3:9.1f} ms  "
          f"({results['teacher_row_s'] / results['teacher_plain_s'] - 1:+.2%})")
    print(f"teacher fwd + full attn row {results['teacher_full_s'] * 1e3:9.1f} ms  "
          f"({results['teacher_full_s'] / results['teacher_plain_s'] - 1:+.2%})")
    results["attmask_overhead"] = overhead
    results["attmask_own_work"] = own / results["step_rand_s"]
    results["masks"] = a.masks
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"setting": a.setting, "device": str(device), **results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
