"""attmask.eval is the core: it imports neither attmask.pretrain nor attmask.transfer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                pkg = "attmask." + path.parent.name
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def test_eval_sources_import_neither_pretrain_nor_transfer() -> None:
    offenders = {}
    for path in sorted((ROOT / "eval").rglob("*.py")):
        bad = {n for n in _imports(path) if n.startswith(("attmask.pretrain", "attmask.transfer"))}
        if bad:
            offenders[path.name] = bad
    assert not offenders, offenders


def test_importing_every_eval_module_loads_neither() -> None:
    modules = [f"attmask.eval.{p.stem}" for p in sorted((ROOT / "eval").glob("*.py")) if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.startswith(('attmask.pretrain', 'attmask.transfer'))]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_pretrain_and_transfer_do_not_import_each_other() -> None:
    for pkg, other in (("pretrain", "attmask.transfer"), ("transfer", "attmask.pretrain")):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            assert not any(n.startswith(other) for n in _imports(path)), path
