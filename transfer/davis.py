"""Tasks ``davis`` and ``davis-score``: DAVIS-2017 semi-supervised video object segmentation.

``attmask-eval davis --ckpt C --dataset davis2017|davis-mini`` propagates each sequence's first
annotation through its frames with the frozen backbone's patch features
(:mod:`.davis_propagation`, DINO's protocol: short side 480 with the long side floored to a
multiple of 64, last-block patch tokens L2-normalised, first frame + 7 previous frames, window
half-size 12 patches, top-5, temperature 0.1), writes indexed PNGs in the official results layout
and scores them in process (:mod:`.davis_metrics`): ``J&F_mean``, ``J_mean``, ``J_recall``,
``J_decay``, ``F_mean``, ``F_recall``, ``F_decay`` (percent) plus a per-sequence CSV.

Masks are written into a fresh hidden folder of RUN_DIR, scored from there (never from files of
an earlier run), and only then moved to ``RUN_DIR/<record name>-masks/`` (replacing the folder of an
earlier run of the same protocol). Every departure from the reference settings (a smaller
``--short-side``, a sequence subset, ``--max-frames``...) makes ``protocol.reference`` false.

``attmask-eval davis-score --results DIR --data DAVIS_DIR --out RUN_DIR`` scores any method's
existing masks the same way and writes a ``davis`` record with ``checkpoint: null``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from attmask.eval import distributed as dist
from attmask.eval.atomic import atomic_write_text
from attmask.eval.context import RunContext
from attmask.eval.datasets import dataset_dir, get_spec, registry_name_for
from attmask.eval.errors import BadInput
from attmask.eval.features import forward_layers
from attmask.eval.records import record_stem
from attmask.eval.tasks import Plan, Task, TaskResult

from .davis_io import (
    DavisLayout,
    first_frame_labels,
    propagation_size,
    read_frame,
    read_label_png,
    resize_labels,
    select_sequences,
    write_indexed_png,
)
from .davis_metrics import BOUND_TH, summarize
from .davis_propagation import PropagationParams, VideoPropagator, one_hot_labels, soft_to_labels
from .davis_scoring import ScoredFolder, digest_files, evaluated_annotations, score_folder, write_csv

log = logging.getLogger(__name__)

REFERENCE = PropagationParams()
REFERENCE_SHORT_SIDE = 480
REFERENCE_MULTIPLE = 64


def _layout(args: argparse.Namespace) -> DavisLayout:
    if getattr(args, "dataset", None) is not None:
        spec = get_spec(args.dataset, "davis")
        return DavisLayout(dataset_dir(args.dataset), split=args.split or spec.test or "val")
    if args.data is None:
        raise BadInput(None, "give --dataset davis2017|davis-mini or --data DAVIS_DIR")
    return DavisLayout(Path(args.data), split=args.split or "val")


def _label(args: argparse.Namespace, layout: DavisLayout) -> str:
    if getattr(args, "dataset", None) is not None:
        return str(args.dataset)
    if args.dataset_name:
        return str(args.dataset_name)
    return registry_name_for(layout.root, "davis") or layout.root.resolve().name


def _write_manifest(ctx: RunContext, stem: str, scored: ScoredFolder, results_root: Path,
                    layout: DavisLayout) -> tuple[list[dict[str, Any]], str]:
    """``inputs`` entries (results and annotations: one digest each) and a sha256sum manifest file."""
    res_entry, res_lines = digest_files(results_root, scored.results)
    ann_entry, ann_lines = digest_files(layout.annotation_root, scored.annotations)
    name = f"{stem}-inputs.sha256"
    text = (f"# results: {res_entry['path']}\n" + "\n".join(res_lines) + "\n"
            f"# annotations: {ann_entry['path']}\n" + "\n".join(ann_lines) + "\n")
    atomic_write_text(ctx.file_in_out(name), text)
    return [res_entry, ann_entry], name


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", default=None, help="ImageSets/2017/<split>.txt (default: val)")
    parser.add_argument("--sequences", nargs="+", default=None, metavar="SEQ",
                        help="score only these sequences (non-reference)")


class DavisTask(Task):
    name = "davis"
    help = "DAVIS-2017 video object segmentation by label propagation (J&F)"
    description = __doc__

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("propagation (reference: DINO's eval_video_segmentation.py)")
        g.add_argument("--n-last-frames", type=int, default=REFERENCE.n_last_frames,
                       help="previous frames in the context besides the first (default: 7)")
        g.add_argument("--size-mask-neighborhood", dest="radius", type=int, default=REFERENCE.radius,
                       help="half-size of the square window in patches; 0 = no window (default: 12)")
        g.add_argument("--topk", type=int, default=REFERENCE.topk, help="sources kept per target (default: 5)")
        g.add_argument("--temperature", type=float, default=REFERENCE.temperature,
                       help="affinity temperature (default: 0.1)")
        g.add_argument("--short-side", type=int, default=REFERENCE_SHORT_SIDE,
                       help="frame short side in pixels; smaller = reduced resolution (default: 480)")
        g.add_argument("--long-multiple", type=int, default=REFERENCE_MULTIPLE,
                       help="the long side is floored to a multiple of this (default: 64)")
        g.add_argument("--max-frames", type=int, default=None,
                       help="only the first N frames of each sequence (non-reference; N >= 3)")
        g.add_argument("--frame-batch", type=int, default=8, help="frames per backbone forward (default: 8)")
        g.add_argument("--tile", type=int, default=8,
                       help="targets per tile side in the propagation (speed only; default: 8)")
        _add_data_options(parser)

    def _params(self, args: argparse.Namespace) -> PropagationParams:
        p = PropagationParams(n_last_frames=args.n_last_frames, radius=args.radius, topk=args.topk,
                              temperature=args.temperature)
        if p.n_last_frames < 0 or p.topk < 1 or p.temperature <= 0 or p.radius < 0:
            raise BadInput(None, f"invalid propagation settings: {p}")
        if args.short_side < 1 or args.long_multiple < 1 or (args.max_frames is not None and args.max_frames < 3):
            raise BadInput(None, "--short-side and --long-multiple must be positive and --max-frames at least 3")
        return p

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        layout = _layout(args)
        seqs = select_sequences(layout.sequences(), args.sequences, layout.split_file)
        params = self._params(args)
        reference = (params == REFERENCE and args.short_side == REFERENCE_SHORT_SIDE
                     and args.long_multiple == REFERENCE_MULTIPLE and args.max_frames is None and not args.sequences)
        protocol: dict[str, Any] = {
            **params.to_dict(),
            "short_side": args.short_side,
            "long_multiple": args.long_multiple,
            "features": "last-block patch tokens, L2-normalised",
            "max_frames": args.max_frames,
            "sequences": seqs if args.sequences else None,
            "bound_th": BOUND_TH,
            "void": "excluded",
            "reference": bool(reference),
        }
        return Plan(dataset=_label(args, layout), split=layout.split, protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        if dist.world_size() > 1:
            raise BadInput(None, "davis runs in one process: launch it without torchrun")
        layout = _layout(args)
        seqs = select_sequences(layout.sequences(), args.sequences, layout.split_file)
        params = self._params(args)
        for seq in seqs:  # fail before any work when a sequence cannot be scored
            evaluated_annotations(layout, seq, args.max_frames)
        model = ctx.backbone().model.to(ctx.device).eval()
        stem = record_stem(self.name, plan.dataset, plan.protocol)
        ctx.out.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".davis-masks-", dir=ctx.out))
        try:
            frames_done = 0
            for seq in tqdm(seqs, desc="davis", unit="seq"):
                frames_done += self._segment(model, layout, seq, work / seq, params, args, ctx.device)
            scored = score_folder(layout, work, seqs, args.max_frames)
            final = ctx.out / f"{stem}-masks"
            if final.exists():
                shutil.rmtree(final)
            work.rename(final)
            final.chmod(0o755)  # mkdtemp made it private
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        csv_name = f"{stem}-per-sequence.csv"
        write_csv(ctx.file_in_out(csv_name), scored.scores)
        metrics = summarize(scored.scores)
        log.info("%s: J&F %.2f, J %.2f, F %.2f", plan.dataset, metrics["J&F_mean"], metrics["J_mean"], metrics["F_mean"])
        ctx.images_seen += frames_done
        return TaskResult(metrics=metrics, images=frames_done,
                          artifacts={"masks": final.name, "per_sequence": csv_name})

    @torch.inference_mode()
    def _segment(self, model: nn.Module, layout: DavisLayout, seq: str, out_dir: Path, params: PropagationParams,
                 args: argparse.Namespace, device: torch.device) -> int:
        """Propagate the first annotation of ``seq`` and write every frame's PNG; returns #frames."""
        frames = layout.frames(seq)
        if args.max_frames is not None:
            frames = frames[: args.max_frames]
        first_ann = layout.annotation_root / seq / f"{frames[0].stem}.png"
        if not first_ann.is_file():
            raise BadInput(first_ann, f"first-frame annotation of {seq} is missing")
        raw_first = read_label_png(first_ann)
        height, width = raw_first.shape
        size = propagation_size(height, width, args.short_side, args.long_multiple)
        patch = _patch_size(model)
        grid = (size[0] // patch, size[1] // patch)
        if min(grid) < 1:
            raise BadInput(None, f"{size[1]}x{size[0]} px is smaller than one {patch}-px patch: raise --short-side")
        _full, small, n_objects = first_frame_labels(first_ann, grid)
        out_dir.mkdir(parents=True)
        write_indexed_png(out_dir / f"{frames[0].stem}.png", raw_first)  # the reference saves it unchanged
        feats = _frame_features(model, frames, size, grid, device, args.frame_batch)
        prop = VideoPropagator(next(feats), one_hot_labels(small, n_objects + 1).to(device), params, tile=args.tile)
        for path, f in zip(frames[1:], feats):
            labels = soft_to_labels(prop.step(f), patch).to(torch.uint8).cpu().numpy()
            write_indexed_png(out_dir / f"{path.stem}.png", resize_labels(labels, (height, width)))
        return len(frames)


def _patch_size(model: nn.Module) -> int:
    p = model.patch_embed.patch_size
    return int(p[0] if isinstance(p, tuple | list) else p)


def _frame_features(model: nn.Module, frames: list[Path], size: tuple[int, int], grid: tuple[int, int],
                    device: torch.device, batch: int) -> Iterator[torch.Tensor]:
    """Patch features [h, w, D] of each frame (last block, final norm), computed ``batch`` at a time.

    Runs under the caller's ``torch.inference_mode`` (a context manager inside a generator would
    stay entered across its yields)."""
    h, w = grid
    patch_px = (h * _patch_size(model), w * _patch_size(model))
    for start in range(0, len(frames), max(1, batch)):
        x = torch.stack([read_frame(p, size) for p in frames[start: start + batch]]).to(device)
        x = x[..., : patch_px[0], : patch_px[1]]  # the reference's strided patch conv drops the remainder
        tokens = forward_layers(model, x, "patch").float()  # [B, h*w, D]
        yield from tokens.reshape(tokens.shape[0], h, w, -1)


class DavisScoreTask(Task):
    name = "davis-score"
    record_task = "davis"
    uses_backbone = False
    help = "score existing DAVIS-2017 masks (writes a davis record and a per-sequence CSV)"
    description = ("Score indexed PNGs in the official results layout (<results>/<sequence>/<frame>.png) against "
                   "a DAVIS folder's annotations: J and F mean / recall / decay, first and last frames excluded. "
                   "Writes a `davis` record (checkpoint null, inputs' sha256) and the per-sequence CSV into RUN_DIR.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--results", required=True, metavar="DIR", help="results folder <seq>/<frame>.png")
        parser.add_argument("--data", required=True, metavar="DAVIS_DIR",
                            help="DAVIS folder (JPEGImages/, Annotations/480p, ImageSets/2017)")
        _add_data_options(parser)

    def plan(self, args: argparse.Namespace, ctx: RunContext) -> Plan:
        layout = _layout(args)
        seqs = select_sequences(layout.sequences(), args.sequences, layout.split_file)
        protocol = {"scored": "existing", "bound_th": BOUND_TH, "void": "excluded",
                    "sequences": seqs if args.sequences else None, "reference": not args.sequences}
        return Plan(dataset=_label(args, layout), split=layout.split, protocol=protocol)

    def run(self, args: argparse.Namespace, ctx: RunContext, plan: Plan) -> TaskResult:
        layout = _layout(args)
        seqs = select_sequences(layout.sequences(), args.sequences, layout.split_file)
        results = Path(args.results)
        scored = score_folder(layout, results, seqs)
        stem = record_stem(self.record_task, plan.dataset, plan.protocol)
        csv_name = f"{stem}-per-sequence.csv"
        write_csv(ctx.file_in_out(csv_name), scored.scores)
        inputs, manifest = _write_manifest(ctx, stem, scored, results, layout)
        return TaskResult(metrics=summarize(scored.scores), images=0, inputs=inputs,
                          artifacts={"per_sequence": csv_name, "inputs_manifest": manifest})


TASK = DavisTask()
SCORE_TASK = DavisScoreTask()
