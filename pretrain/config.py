"""Pre-training configuration: one typed dataclass, YAML presets, ``key=value`` overrides.

Keys carry the reference argument names of ``main_attmask.py`` / ``main_ibot.py`` wherever one exists
(``pred_shape``, ``pred_ratio``, ``pred_ratio_var``, ``masking_prob``, ``show_max``, ``out_dim``,
``shared_head``, ``norm_last_layer``, ``momentum_teacher``, ``teacher_temp``, ...), so a reference
command line translates one to one. Defaults are the reference ViT-S/16 AttMask run of the AttMask
README (full ImageNet, 100 epochs; ../shared/reference/PROTOCOLS.md §1-2).

Presets (``configs/pretrain/*.yaml``) may name a ``base:`` preset whose keys they override, and may
declare ``reference: true`` (the preset reproduces a reference run exactly). ``description:`` is free
text. Every other key must be a field of :class:`PretrainConfig`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from attmask.eval.errors import BadInput
from attmask.eval.resources import find_config, load_yaml

PRESET_KIND = "pretrain"
RUN_CONFIG_NAME = "config.yaml"  # RUN_DIR/config.yaml: the run's resolved configuration, a preset of its own
AUGMENT_ON = ("loader", "device")
ATTMASK_SHAPES = ("attmask_high", "attmask_low", "attmask_hint")
PRED_SHAPES = (*ATTMASK_SHAPES, "rand", "block", "none")
PRED_SHAPE_ALIASES = {"random": "rand"}
# Keys that may differ between a checkpoint and the run that resumes it: they change neither the
# training data nor the arithmetic (data_path may move; the data behind it must be the same).
RESUME_FREE_KEYS = frozenset({"num_workers", "eval_every", "log_every", "saveckp_freq", "nb_knn", "knn_temperature",
                              "knn_resize", "knn_crop", "knn_batch_size", "data_path", "val_split", "compile",
                              "tensorboard"})


@dataclass
class PretrainConfig:
    """Every option of a pre-training run (reference name and default where one exists)."""

    # -- backbone (ViT-S/16: dim 384, depth 12, heads 6) --------------------------------------------
    arch: str = "vit_small"  # vit_tiny|small|base|large, vit_d<dim>_l<depth>_h<heads>, or a timm vit_* name
    patch_size: int = 16
    drop_path: float = 0.1  # student only
    # -- head (iBOT head: MLP in->2048->2048->256, L2 norm, weight-normalised 256->K) ---------------
    out_dim: int = 8192
    patch_out_dim: int = 8192  # used only when neither head is shared (reference rule)
    shared_head: bool = True
    shared_head_teacher: bool = True
    norm_last_layer: bool = False
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    act_in_head: str = "gelu"
    # -- objective -----------------------------------------------------------------------------------
    loss: str = "ibot"  # ibot (CLS + masked patch) | dino (CLS only)
    use_masked_im_modeling: bool = True
    lambda1: float = 1.0
    lambda2: float = 1.0
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    center_momentum: float = 0.9
    # -- masking -------------------------------------------------------------------------------------
    pred_shape: str = "attmask_high"
    pred_ratio: float | list[float] = 0.3
    pred_ratio_var: float | list[float] = 0.2
    pred_aspect_ratio: list[float] = field(default_factory=lambda: [0.3, 1 / 0.3])
    pred_start_epoch: int = 0
    masking_prob: float = 0.5
    show_max: float = 0.1
    # -- optimisation --------------------------------------------------------------------------------
    epochs: int = 100
    batch_size_per_gpu: int = 60
    optimizer: str = "adamw"
    lr: float = 5e-4  # at total batch 256; scaled linearly
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    momentum_teacher: float = 0.996
    precision: str = "auto"  # auto (fp16 on CUDA as the reference's use_fp16, bf16 on CPU) | fp32 | bf16 | fp16
    attn_impl: str = "auto"  # auto (fused SDPA on CUDA, explicit on CPU) | fused | explicit
    compile: bool = False
    # -- multi-crop ----------------------------------------------------------------------------------
    global_crops_number: int = 2
    global_crops_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    global_crops_size: int = 224
    local_crops_number: int = 10
    local_crops_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])
    local_crops_size: int = 96
    flip_prob: float = 0.5
    color_jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])  # first global, other globals, locals
    blur_radius: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_prob: float = 0.2  # globals after the first
    crop_interpolation: str = "bicubic"
    augment_on: str = "loader"  # loader: PIL in loader workers, as the reference | device: batched on the device (one image size)
    # -- data ----------------------------------------------------------------------------------------
    dataset: str | None = None  # registry name (configs/datasets.yaml), resolved under $ATTMASK_DATA
    data_path: str | None = None  # or a folder holding <train_split>/<class>/<image>
    train_split: str | None = None  # default: the registry's train split, else "train"
    val_split: str | None = None  # default: the registry's test split, else "val"
    subset: int = -1  # first N images per class in sorted order (-1: all); 260 = "20% ImageNet"
    num_workers: int = 4
    seed: int = 0
    # -- checkpoints, logging, online evaluation ----------------------------------------------------
    saveckp_freq: int = 40
    log_every: int = 10  # iterations between JSON-lines / TensorBoard entries
    tensorboard: bool = True  # also write TensorBoard scalars (false where tensorboard is not installed)
    eval_every: int = 20  # teacher k-NN at init and after every eval_every-th and the last epoch (0: never)
    nb_knn: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    knn_temperature: float = 0.07
    knn_resize: int = 256
    knn_crop: int = 224
    knn_batch_size: int = 128

    # -- derived -------------------------------------------------------------------------------------
    @property
    def attention_guided(self) -> bool:
        return self.pred_shape in ATTMASK_SHAPES

    @property
    def masks_student(self) -> bool:
        """Whether the student's global crops are masked at all."""
        return self.use_masked_im_modeling and self.pred_shape != "none"

    @property
    def patch_dim(self) -> int:
        """K' of the patch head: ``out_dim`` when either head is shared (reference rule), else ``patch_out_dim``."""
        return self.out_dim if (self.shared_head or self.shared_head_teacher) else self.patch_out_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dump_config(cfg: PretrainConfig, reference: bool = False) -> str:
    """``cfg`` as a preset YAML (every key, resolved) that :func:`load_config` reads back to an equal
    configuration; ``reference: true`` is kept when the run reproduces a reference preset unchanged."""
    body: dict[str, Any] = {"reference": True} if reference else {}
    body.update(cfg.to_dict())
    return ("# The resolved configuration of a pre-training run; "
            "`attmask-pretrain train --config THIS_FILE --out DIR` repeats it.\n"
            + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(PretrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(PretrainConfig)}


def _coerce(name: str, value: Any, tp: Any, source: str | None) -> Any:
    """Check ``value`` against the annotation ``tp`` (int -> float promotion, '1e-6' strings for floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg, source)
            except BadInput as exc:
                errors.append(exc.problem)
        raise BadInput(source, f"{name}: {value!r} is not a valid value ({'; '.join(errors)})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise BadInput(source, f"{name}: expected a list, got {value!r}")
        return [_coerce(name, v, item, source) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BadInput(source, f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(source, f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise BadInput(source, f"{name}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise BadInput(source, f"{name}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise BadInput(source, f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {name}")


def _unknown_key(key: str, source: str | None) -> BadInput:
    close = difflib.get_close_matches(key, [f.name for f in dataclasses.fields(PretrainConfig)], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return BadInput(source, f"unknown pre-training option {key!r}{hint}")


def build_config(values: dict[str, Any], source: str | None = None) -> PretrainConfig:
    """A validated :class:`PretrainConfig` from a flat mapping (unknown keys and bad values are BadInput)."""
    types_ = _field_types()
    kwargs = {}
    for key, value in values.items():
        if key not in types_:
            raise _unknown_key(key, source)
        kwargs[key] = _coerce(key, value, types_[key], source)
    cfg = PretrainConfig(**kwargs)
    validate(cfg, source)
    return cfg


def validate(cfg: PretrainConfig, source: str | None = None) -> None:
    """Cross-field checks; normalises the ``random`` alias of ``pred_shape`` to ``rand``."""
    cfg.pred_shape = PRED_SHAPE_ALIASES.get(cfg.pred_shape, cfg.pred_shape)

    def bad(problem: str) -> BadInput:
        return BadInput(source, problem)

    if cfg.pred_shape not in PRED_SHAPES:
        raise bad(f"pred_shape {cfg.pred_shape!r} is not one of {', '.join(PRED_SHAPES)} (or the alias random)")
    if cfg.loss not in ("ibot", "dino"):
        raise bad(f"loss {cfg.loss!r} is not ibot or dino")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise bad(f"optimizer {cfg.optimizer!r} is not adamw or sgd")
    if cfg.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise bad(f"precision {cfg.precision!r} is not auto, fp32, bf16 or fp16")
    if cfg.attn_impl not in ("auto", "fused", "explicit"):
        raise bad(f"attn_impl {cfg.attn_impl!r} is not auto, fused or explicit")
    if cfg.act_in_head not in ("gelu", "relu"):
        raise bad(f"act_in_head {cfg.act_in_head!r} is not gelu or relu")
    ratios = cfg.pred_ratio if isinstance(cfg.pred_ratio, list) else [cfg.pred_ratio]
    variances = cfg.pred_ratio_var if isinstance(cfg.pred_ratio_var, list) else [cfg.pred_ratio_var] * len(ratios)
    if len(ratios) != len(variances) or not ratios:
        raise bad(f"pred_ratio {cfg.pred_ratio} and pred_ratio_var {cfg.pred_ratio_var} differ in length")
    for r, v in zip(ratios, variances):
        if not (0 <= r - v and r + v <= 1 and v >= 0):
            raise bad(f"pred_ratio {r} +- pred_ratio_var {v} leaves [0, 1]")
    if not 0 <= cfg.masking_prob <= 1:
        raise bad(f"masking_prob {cfg.masking_prob} is not in [0, 1]")
    if not 0 <= cfg.show_max <= 1:
        raise bad(f"show_max {cfg.show_max} is not in [0, 1]")
    for name in ("global_crops_scale", "local_crops_scale", "pred_aspect_ratio", "blur_radius"):
        pair = getattr(cfg, name)
        if len(pair) != 2 or pair[0] > pair[1] or pair[0] < 0:
            raise bad(f"{name} must be [low, high] with 0 <= low <= high, got {pair}")
    if cfg.augment_on not in AUGMENT_ON:
        raise bad(f"augment_on {cfg.augment_on!r} is not one of {', '.join(AUGMENT_ON)}")
    if len(cfg.color_jitter) != 4:
        raise bad(f"color_jitter must be [brightness, contrast, saturation, hue], got {cfg.color_jitter}")
    if len(cfg.blur_prob) != 3:
        raise bad(f"blur_prob must be [first global, other globals, locals], got {cfg.blur_prob}")
    if cfg.global_crops_number < 1:
        raise bad("global_crops_number must be at least 1")
    if cfg.loss == "ibot" and cfg.global_crops_number + cfg.local_crops_number < 2:
        raise bad("the CLS loss needs at least two views (global_crops_number + local_crops_number >= 2)")
    for name in ("global_crops_size", "local_crops_size"):
        size = getattr(cfg, name)
        if size % cfg.patch_size:
            raise bad(f"{name} {size} is not a multiple of patch_size {cfg.patch_size}")
    for name in ("epochs", "batch_size_per_gpu", "out_dim", "patch_out_dim", "head_nlayers", "log_every"):
        if getattr(cfg, name) < 1:
            raise bad(f"{name} must be positive")
    if cfg.warmup_epochs > cfg.epochs:
        raise bad(f"warmup_epochs {cfg.warmup_epochs} exceeds epochs {cfg.epochs}")
    if cfg.subset == 0 or cfg.subset < -1:
        raise bad(f"subset {cfg.subset}: give N >= 1 images per class, or -1 for all")


# -- presets and overrides ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedConfig:
    """A resolved configuration plus where it came from (for records and the checkpoint's ``args``)."""

    config: PretrainConfig
    source: str  # preset name or file path
    path: Path
    reference: bool  # the preset reproduces a reference run and no override changed it
    overrides: dict[str, Any]


def _read_preset(name_or_path: str | os.PathLike[str], seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], bool, Path]:
    path = find_config(PRESET_KIND, name_or_path)
    key = str(path.resolve())
    if key in seen:
        raise BadInput(path, "preset inheritance loops back to itself through base:")
    raw = load_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadInput(path, "a pre-training preset must be a YAML mapping of options")
    raw = dict(raw)
    base = raw.pop("base", None)
    reference = bool(raw.pop("reference", False))
    raw.pop("description", None)
    values: dict[str, Any] = {}
    if base is not None:
        # a base is looked up beside the preset first, then among the shipped presets
        sibling = path.parent / f"{base}.yaml"
        base_values, _, _ = _read_preset(sibling if sibling.is_file() else base, (*seen, key))
        values.update(base_values)
    values.update(raw)
    return values, reference, path


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "global_crops_scale=[0.3, 1]"]`` -> mapping; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise BadInput(None, f"override {item!r} is not KEY=VALUE")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise BadInput(None, f"override {item!r} has no key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise BadInput(None, f"override {item!r}: value is not valid YAML") from None
        out[key] = value
    return out


def load_config(name_or_path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Resolve a preset name or YAML path, apply overrides (flat keys, as the configuration), validate."""
    values, reference, path = _read_preset(name_or_path)
    overrides = dict(overrides or {})
    merged = {**values, **overrides}
    changed = {k for k in overrides if merged.get(k) != values.get(k)}
    cfg = build_config(merged, source=str(path))
    return LoadedConfig(config=cfg, source=str(name_or_path), path=path, reference=reference and not changed,
                        overrides=overrides)
