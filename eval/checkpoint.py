"""Checkpoint import: one loader for every ViT checkpoint layout, strict and safe.

Formats recognised without the user naming them:

- ``pretrain``: iBOT / AttMask / DINO training checkpoints (and this project's own, same layout):
  top-level ``student`` / ``teacher`` (``module.`` and ``backbone.`` prefixes), ``optimizer``,
  ``epoch``, ``args``, ``ibot_loss`` / ``dino_loss``, ``fp16_scaler``. ``--checkpoint-key``
  picks the network (default ``teacher``).
- ``backbone-export``: ``{'state_dict': {...}}`` (prefixes stripped or not);
  ``model-export``: ``{'model': {...}}`` (DeiT / MAE / BEiT style).
- ``state-dict`` / ``timm``: a bare mapping of tensors (timm ViT state dicts included;
  their classifier ``head.*`` is ignored and reported).
- ``safetensors``: a ``.safetensors`` file holding one of the above.

Loading is safe: ``torch.load(weights_only=True)`` with only ``argparse.Namespace`` (the reference
checkpoints' ``args``) allow-listed. After dropping the known non-backbone entries (heads,
``masked_embed``), the backbone keys must equal the model's exactly; otherwise a one-line error
lists missing / unexpected keys and the prefix that would have matched. ``pos_embed`` is
interpolated bicubically when the grid differs. There is no fallback of any kind.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import re
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import ArchSpec, build_vit, resample_pos_embed, spec_from_name, spec_from_state_dict
from .errors import BadInput

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
PRETRAIN_KEYS = ("teacher", "student")
STRIPPABLE_PREFIXES = ("module.", "_orig_mod.", "backbone.")
# Entries of a network's state dict that are not part of the backbone (reported as ignored).
NON_BACKBONE_PREFIXES = ("head.", "head_dist.")
NON_BACKBONE_KEYS = ("masked_embed", "mask_token")
SAFE_GLOBALS: list[Any] = [argparse.Namespace]


@dataclass
class CheckpointInfo:
    """What the loader found and did; ``record()`` is the record's ``checkpoint`` field."""

    path: str
    sha256: str
    format: str
    key: str | None
    arch: ArchSpec
    num_params: int
    prefixes_stripped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "key": self.key, "arch": self.arch.name}

    def summary_lines(self) -> list[str]:
        ignored = _summarise_keys(self.ignored) if self.ignored else "nothing"
        lines = [
            f"path:       {self.path}",
            f"sha256:     {self.sha256}",
            f"format:     {self.format}",
            f"key:        {self.key if self.key is not None else '-'}",
            f"arch:       {self.arch.name} (embed_dim={self.arch.embed_dim}, depth={self.arch.depth}, "
            f"heads={self.arch.num_heads}, patch={self.arch.patch_size}, img_size={self.arch.img_size}, "
            f"prefix_tokens={self.arch.num_prefix_tokens})",
            f"parameters: {self.num_params:,} (backbone)",
            f"stripped:   {', '.join(repr(p) for p in self.prefixes_stripped) or 'no prefix'}",
            f"ignored:    {ignored}",
        ]
        lines += [f"note:       {n}" for n in self.notes]
        return lines


@dataclass
class LoadedBackbone:
    model: nn.Module
    info: CheckpointInfo


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _summarise_keys(keys: list[str], limit: int = 6) -> str:
    """Group keys by their first component so a head of 8 tensors prints as ``head.* (8)``."""
    groups: Counter[str] = Counter()
    for k in keys:
        groups[k.split(".")[0] + (".*" if "." in k else "")] += 1
    parts = [f"{g} ({n})" if n > 1 else g for g, n in sorted(groups.items())]
    more = f", … {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def read_checkpoint_file(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint file safely; every failure is a one-line BadInput naming the file."""
    p = Path(path)
    if not p.exists():
        raise BadInput(p, "no such file")
    if p.is_dir():
        raise BadInput(p, "is a folder, not a checkpoint file")
    if p.stat().st_size == 0:
        raise BadInput(p, "empty file, not a checkpoint")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadInput(p, f"corrupt safetensors file ({_first_line(exc)})") from None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        glob = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", msg)
        if glob:
            raise BadInput(p, f"refusing to load: it pickles {glob.group(1)}, which safe loading does not allow "
                              "(only tensors, containers and argparse.Namespace)") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
        reason = detail.group(1).strip() if detail else _first_line(exc)
        raise BadInput(p, f"not a PyTorch checkpoint (UnpicklingError: {reason})") from None
    except (RuntimeError, zipfile.BadZipFile) as exc:
        msg = str(exc)
        if "zip" in msg.lower() or "central directory" in msg or "archive" in msg or "file read failed" in msg:
            raise BadInput(p, "truncated or corrupt checkpoint (not a readable torch archive)") from None
        raise BadInput(p, f"cannot load checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # garbage bytes make the unpickler fail in arbitrary ways
        raise BadInput(p, f"not a PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def select_network(obj: Any, path: str, checkpoint_key: str | None) -> tuple[str, str | None, dict[str, torch.Tensor], Any]:
    """Sniff the format and return ``(format, key, state_dict, args)``."""
    if not isinstance(obj, Mapping):
        raise BadInput(path, f"not a checkpoint: the file holds a {type(obj).__name__}, not a dict")
    if not obj:
        raise BadInput(path, "not a checkpoint: the file holds an empty dict")
    if any(k in obj for k in PRETRAIN_KEYS):
        key = checkpoint_key or "teacher"
        if key not in obj:
            present = [k for k in obj if isinstance(obj[k], Mapping)]
            raise BadInput(path, f"no {key!r} entry (this pre-training checkpoint has: {', '.join(map(str, present))})")
        if "attmask" in obj:
            fmt = "attmask"
        elif "ibot_loss" in obj:
            fmt = "ibot"
        elif "dino_loss" in obj:
            fmt = "dino"
        else:
            fmt = "pretrain"
        sd = obj[key]
        if not _is_tensor_mapping(sd):
            raise BadInput(path, f"entry {key!r} is not a state dict of tensors")
        return fmt, key, dict(sd), obj.get("args")
    for wrapper, fmt in (("state_dict", "backbone-export"), ("model", "model-export")):
        if wrapper in obj and _is_tensor_mapping(obj[wrapper]):
            if checkpoint_key is not None and checkpoint_key != wrapper:
                if checkpoint_key in obj and _is_tensor_mapping(obj[checkpoint_key]):
                    return fmt, checkpoint_key, dict(obj[checkpoint_key]), obj.get("args")
                raise BadInput(path, f"no {checkpoint_key!r} entry (this {fmt} file has {wrapper!r})")
            return fmt, wrapper, dict(obj[wrapper]), obj.get("args")
    if _is_tensor_mapping(obj):
        if checkpoint_key is not None:
            raise BadInput(path, f"no {checkpoint_key!r} entry: the file is a bare state dict")
        fmt = "timm" if "head.weight" in obj else "state-dict"
        return fmt, None, dict(obj), None
    if checkpoint_key is not None and checkpoint_key in obj and _is_tensor_mapping(obj[checkpoint_key]):
        return "keyed-state-dict", checkpoint_key, dict(obj[checkpoint_key]), obj.get("args")
    keys = ", ".join(map(str, list(obj)[:8]))
    raise BadInput(path, f"not a recognised checkpoint (top-level keys: {keys}); "
                         "name the entry that holds the state dict with --checkpoint-key")


def strip_to_backbone(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Strip DDP / compile / ``backbone.`` prefixes and drop non-backbone entries.

    Returns ``(backbone_state_dict, prefixes_stripped, ignored_keys)``.
    """
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped.append(prefix)
                changed = True
    ignored: list[str] = []
    if any(k.startswith("backbone.") for k in sd):
        backbone = {}
        for k, v in sd.items():
            if k.startswith("backbone."):
                backbone[k[len("backbone."):]] = v
            else:
                ignored.append(k)
        sd = backbone
        stripped.append("backbone.")
        # a compiled or DDP-wrapped backbone inside the wrapper
        for prefix in ("module.", "_orig_mod."):
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped.append(prefix)
    out = {}
    for k, v in sd.items():
        if k.startswith(NON_BACKBONE_PREFIXES) or k in NON_BACKBONE_KEYS:
            ignored.append(k)
        else:
            out[k] = v
    return out, stripped, ignored


def _prefix_hint(missing: set[str], unexpected: set[str]) -> str:
    """The prefix carried by the unexpected keys that would turn them into the missing ones."""
    prefixes: Counter[str] = Counter()
    for k in unexpected:
        for m in missing:
            if k.endswith(m) and k != m:
                prefixes[k[: len(k) - len(m)]] += 1
                break
    if not prefixes:
        for m in missing:
            for k in unexpected:
                if m.endswith(k) and m != k:
                    return f"; the model's keys carry a prefix {m[: len(m) - len(k)]!r} that the file lacks"
        return ""
    prefix, count = prefixes.most_common(1)[0]
    return f"; {count} keys carry the prefix {prefix!r}, without it they would match"


def _short_list(keys: set[str], limit: int = 5) -> str:
    items = sorted(keys)
    more = f", … ({len(items)} in all)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


def _arch_from_args(args: Any, sd: dict[str, torch.Tensor]) -> ArchSpec | None:
    """Use the checkpoint's own ``args`` (reference Namespace or our dict) for heads when present."""
    if args is None:
        return None
    get = args.get if isinstance(args, Mapping) else (lambda k, d=None: getattr(args, k, d))
    num_heads = get("num_heads")
    arch = get("arch")
    if num_heads is None and isinstance(arch, str):
        try:
            num_heads = spec_from_name(arch).num_heads
        except BadInput:
            num_heads = None
        else:
            if spec_from_name(arch).embed_dim != int(sd["patch_embed.proj.weight"].shape[0]):
                num_heads = None
    if num_heads is None:
        return None
    return spec_from_state_dict(sd, num_heads=int(num_heads))


def load_backbone(ckpt: str, checkpoint_key: str | None = None, arch: str | None = None,
                  patch_size: int | None = None, img_size: int | None = None, seed: int = 0) -> LoadedBackbone:
    """Build the timm ViT for ``ckpt`` with its weights loaded strictly.

    ``ckpt`` is a file path or ``random:ARCH`` (an explicitly random-initialised backbone, seeded
    by ``seed``). ``arch`` overrides the inferred architecture; ``img_size`` sets the model's
    native grid (``pos_embed`` is interpolated bicubically to it).
    """
    if ckpt.startswith(RANDOM_PREFIX):
        return _random_backbone(ckpt[len(RANDOM_PREFIX):], arch, patch_size, img_size, seed)
    path = str(ckpt)
    obj = read_checkpoint_file(path)
    fmt, key, raw_sd, args = select_network(obj, path, checkpoint_key)
    sd, stripped, ignored = strip_to_backbone(raw_sd)
    if not sd:
        raise BadInput(path, f"entry {key!r} holds no backbone tensors (only {_summarise_keys(ignored)})")
    notes: list[str] = []
    if arch is not None:
        spec = spec_from_name(arch, patch_size=patch_size, img_size=img_size)
    else:
        spec = _arch_from_args(args, sd) if "patch_embed.proj.weight" in sd else None
        if spec is None:
            try:
                spec = spec_from_state_dict(sd, source=path)
            except BadInput as exc:
                missing_blocks = "blocks" not in exc.problem and "patch_embed" in exc.problem
                if missing_blocks:
                    hint = _prefix_hint({"patch_embed.proj.weight"}, set(sd))
                    raise BadInput(path, f"{exc.problem}{hint}") from None
                raise
            if spec.embed_dim not in (192, 384, 768, 1024, 1280, 1536):
                notes.append(f"heads inferred as {spec.num_heads} (head dim 64) for a non-standard width; "
                             "pass --arch if that is wrong")
        if patch_size is not None and patch_size != spec.patch_size:
            raise BadInput(path, f"--patch-size {patch_size} but the checkpoint's patch embedding has "
                                 f"kernel {spec.patch_size}")
        if img_size is not None:
            spec = ArchSpec(**{**spec.to_dict(), "img_size": img_size})
    model = build_vit(spec)
    expected = model.state_dict()
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {_short_list(unexpected)}")
        raise BadInput(path, f"backbone keys do not match {spec.name} ({key or fmt}): " + ", ".join(parts)
                       + _prefix_hint(missing, unexpected))
    for name, tensor in list(sd.items()):
        want = expected[name].shape
        if name == "pos_embed" and tensor.shape != want and tensor.ndim == 3 and tensor.shape[-1] == want[-1]:
            grid = spec.img_size // spec.patch_size
            prefix_in_pos = 0 if spec.no_embed_class else spec.num_prefix_tokens
            sd[name] = resample_pos_embed(tensor, (grid, grid), prefix_in_pos)
            notes.append(f"pos_embed interpolated (bicubic) from {tensor.shape[1] - prefix_in_pos} to "
                         f"{grid * grid} positions")
        elif tensor.shape != want:
            raise BadInput(path, f"wrong architecture for {spec.name}: {name} has shape {list(tensor.shape)} "
                                 f"in the checkpoint but {list(want)} in the model (pass the right --arch)")
    model.load_state_dict(sd, strict=True)
    model.eval()
    num_params = sum(p.numel() for p in model.parameters())
    info = CheckpointInfo(path=os.path.abspath(path), sha256=sha256_file(path), format=fmt, key=key, arch=spec,
                          num_params=num_params, prefixes_stripped=stripped, ignored=sorted(ignored), notes=notes)
    log.info("loaded %s (%s, key=%s, %s); ignored: %s", path, fmt, key, spec.name,
             _summarise_keys(info.ignored) if info.ignored else "nothing")
    return LoadedBackbone(model=model, info=info)


def _random_backbone(arch_name: str, arch: str | None, patch_size: int | None, img_size: int | None,
                     seed: int) -> LoadedBackbone:
    name = arch or arch_name
    if not name:
        raise BadInput(None, "random: needs an architecture, e.g. --ckpt random:vit_small")
    spec = spec_from_name(name, patch_size=patch_size, img_size=img_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(spec)
    model.eval()
    tag = f"random:{spec.name}:seed={seed}"
    info = CheckpointInfo(path=tag, sha256=hashlib.sha256(tag.encode()).hexdigest(), format="random", key=None,
                          arch=spec, num_params=sum(p.numel() for p in model.parameters()),
                          notes=[f"explicitly random-initialised (timm init, seed {seed})"])
    return LoadedBackbone(model=model, info=info)
