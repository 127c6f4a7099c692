"""Run logs: JSON lines (``RUN_DIR/log.jsonl``) and TensorBoard (``RUN_DIR/tb/``), rank 0 only.

Every line is one JSON object with ``kind``:

- ``train``: every ``log_every`` iterations: ``step``, ``epoch``, ``loss``, ``cls``, ``patch``, ``lr``,
  ``wd``, ``momentum``, ``mask_ratio`` (fraction of global-crop tokens masked), the teacher's CLS targets'
  ``teacher_entropy`` and ``teacher_max_prob``, ``teacher_spread`` (std over the prototypes of its centred
  CLS logits; near 0 = uniform collapse), ``teacher_patch_entropy`` (iBOT: its masked-token targets),
  ``images_per_s``, ``mem_mb``;
- ``epoch``: means of the above over an epoch;
- ``eval``: the teacher's online k-NN metrics (``top1@k20``, ..., percent) after an epoch;
- ``stop``: why a run ended early (``--max-steps``, a non-finite loss).

``attmask-pretrain curves`` reads the ``eval`` lines.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
TB_DIR = "tb"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLog:
    """Appends JSON lines and TensorBoard scalars; a no-op on non-main ranks."""

    def __init__(self, out: str | os.PathLike[str], enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(out) / LOG_NAME
        self.enabled = enabled
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(out) / TB_DIR))

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        entry = {"kind": kind, "step": step, **{k: _clean(v) for k, v in values.items()}}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, allow_nan=False) + "\n")
        if self._writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "step":
                    self._writer.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_log(run_dir: str | os.PathLike[str], kind: str | None = None) -> list[dict[str, Any]]:
    """Entries of ``RUN_DIR/log.jsonl`` (of one ``kind`` when given), in order; malformed lines are skipped
    with a warning (a killed run may leave a partial last line)."""
    path = Path(run_dir) / LOG_NAME
    out = []
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a malformed log line", path, n)
            continue
        if kind is None or entry.get("kind") == kind:
            out.append(entry)
    return out


def truncate_after(run_dir: str | os.PathLike[str], step: int) -> None:
    """Drop log entries past ``step`` (a resumed run rewrites them, so curves never count them twice)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return
    keep = [e for e in read_log(run_dir) if int(e.get("step", 0)) <= step]
    from attmask.eval.atomic import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(e, allow_nan=False) + "\n" for e in keep))
