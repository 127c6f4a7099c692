"""``attmask-eval data prepare|verify NAME [--root DIR]``: obtain and check datasets.

Both work on ``DIR/<folder>`` of the registry (``configs/datasets.yaml``; default root
``$ATTMASK_DATA``), e.g. ``cifar10`` -> ``DIR/cifar10``, ``roxford5k`` -> ``DIR/revisitop/roxford5k``.

``prepare``: a copy that already verifies is left alone (nothing downloaded); otherwise the recipe's
files are downloaded into ``DIR/.attmask-downloads`` (resumable, checksum-verified), installed into
a temporary sibling of the dataset folder, verified there, and only then renamed into place; the
archives are deleted afterwards unless ``--keep-archives``. An existing copy that fails
verification is never overwritten. ImageNet: prints the manual steps (exit 1 until the copy verifies).

``verify``: prints one line per check; exit 0 when all pass, 1 when the copy is incomplete or
wrong, 2 on bad input (unknown name, missing folder).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from .archives import staged_folder
from .data_sources import Recipe, known_checksums, preparable, recipe
from .data_verify import Check, check_builtin, verify_folder
from .datasets import DatasetSpec, data_root, get_spec, registry
from .downloads import fetch, remove_downloads
from .errors import BadInput, TaskFailed

log = logging.getLogger(__name__)

DOWNLOADS = ".attmask-downloads"


def dataset_path(spec: DatasetSpec, root: Path) -> Path:
    """``root/<folder>[/<subdir>]``: the folder that holds the dataset's layout."""
    if spec.folder is None:
        raise BadInput(None, f"dataset {spec.name!r} is built in and has no folder")
    path = root / spec.folder
    return path / spec.subdir if spec.subdir else path


def report(name: str, path: Path | None, checks: list[Check]) -> bool:
    """Print the checks; returns whether all passed."""
    print(f"{name}: {path}" if path is not None else f"{name}:")
    for c in checks:
        print(c.line())
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"FAIL {name}: {len(failed)} of {len(checks)} checks failed")
    else:
        print(f"PASS {name}: {len(checks)} check{'s' if len(checks) != 1 else ''}")
    return not failed


def verify(name: str, root: Path | None = None) -> tuple[Path | None, list[Check]]:
    """Run every check of dataset ``name`` under ``root`` (default ``$ATTMASK_DATA``)."""
    spec = get_spec(name)
    if spec.kind == "builtin":
        return None, check_builtin(spec)
    base = data_root(root)
    if not base.is_dir():
        raise BadInput(base, "no such data root folder")
    path = dataset_path(spec, base)
    if not path.is_dir():
        hint = f"; see `attmask-eval data prepare {name}`" if name in preparable() else ""
        raise BadInput(path, f"dataset {name!r} not found (expected the {spec.kind} layout here{hint})")
    expect = spec.extra.get("expect", {})
    return path, verify_folder(spec, path, expect, known_checksums(name), root=base)


def prepare(rec: Recipe, root: Path, *, download_dir: Path | None = None, keep_archives: bool = False,
            progress: bool = True) -> int:
    """Download, check and install ``rec`` under ``root``; returns the exit status (0, or 1 for ImageNet's steps)."""
    spec = get_spec(rec.name)
    target = dataset_path(spec, root)
    if target.exists():
        checks = verify_folder(spec, target, rec.expect, rec.kept_checksums())
        if all(c.ok for c in checks):
            report(rec.name, target, checks)
            print(f"{rec.name}: already prepared in {target}; nothing downloaded")
            return 0
        if rec.instructions is None:
            first = next(c for c in checks if not c.ok)
            raise BadInput(target, f"exists but fails verification ({first.name}: {first.detail}); move it away "
                                   f"and run `data prepare {rec.name}` again (see `data verify {rec.name}`)")
        report(rec.name, target, checks)
    if rec.instructions is not None or rec.installer is None:
        print((rec.instructions or f"{rec.name}: no download recipe").format(target=target, root=root))
        return 1
    downloads = download_dir if download_dir is not None else root / DOWNLOADS
    created = [p for p in (downloads, *downloads.parents) if not p.exists()]
    try:
        archives = {f.filename: fetch(f, downloads, progress=progress) for f in rec.files}
    except BadInput:
        for folder in created:  # folders made for this download, when left empty (a resumable .part stays)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    # Downloads without a published checksum may be the damaged ones when their content is wrong: they
    # are deleted then, so that the next run fetches them again (verified ones are kept).
    unverified = [archives[f.filename] for f in rec.files if f.checksum is None]
    with staged_folder(target) as staging:
        try:
            summary = rec.installer.install(archives, staging, progress)
        except BadInput as exc:
            if exc.path is not None and Path(exc.path) in unverified:
                Path(exc.path).unlink()
                raise BadInput(exc.path, f"{exc.problem}; the download was deleted, run again to fetch it anew") \
                    from None
            raise
        checks = verify_folder(spec, staging, rec.expect, rec.kept_checksums())
        if not all(c.ok for c in checks):
            report(rec.name, staging, checks)
            remove_downloads(unverified)
            raise TaskFailed(f"{rec.name}: the extracted copy fails verification (see above); nothing was installed"
                             + (f"; deleted the downloads without a published checksum "
                                f"({', '.join(p.name for p in unverified)})" if unverified else ""))
    if not keep_archives:
        remove_downloads(list(archives.values()))
    report(rec.name, target, checks)
    print(f"{rec.name}: prepared in {target} ({summary})")
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    rec = recipe(args.name, mirror=args.mirror)
    root = data_root(args.root)
    return prepare(rec, root, download_dir=args.download_dir, keep_archives=args.keep_archives,
                   progress=not args.no_progress)


def _run_verify(args: argparse.Namespace) -> int:
    path, checks = verify(args.name, args.root)
    return 0 if report(args.name, path, checks) else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download and check datasets (data prepare|verify NAME)",
                       description="Obtain datasets in the layouts the tasks read (`prepare`) and check existing "
                                   "copies (`verify`). Both work on ROOT/<folder of NAME> (configs/datasets.yaml).")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=type(p))
    names_help = f"registered dataset name: {', '.join(sorted(registry()))}"
    root_help = "folder that holds the datasets (default: $ATTMASK_DATA)"

    prep = data_sub.add_parser("prepare", help="download, verify and install a dataset",
                               description="Download (resumable, checksum-verified), extract atomically into "
                                           "ROOT/<folder>, then verify. A copy that already verifies is left alone. "
                                           f"Datasets: {', '.join(preparable())} (imagenet: manual steps).")
    prep.add_argument("name", metavar="NAME", help=names_help)
    prep.add_argument("--root", type=Path, default=None, help=root_help)
    prep.add_argument("--mirror", default=None, metavar="URL",
                      help="fetch every file as URL/<file name> instead of the official URL, e.g. "
                           "file:///scratch/archives (checksums are still checked; default: official URLs)")
    prep.add_argument("--download-dir", type=Path, default=None,
                      help=f"where archives are downloaded (default: ROOT/{DOWNLOADS})")
    prep.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives after installing")
    prep.add_argument("--no-progress", action="store_true", help="no progress bars")
    prep.set_defaults(func=_run_prepare)

    ver = data_sub.add_parser("verify", help="check an existing copy (file counts, checksums where known)",
                              description="Check ROOT/<folder of NAME>: file counts per split, ground-truth files, "
                                          "annotations matching images, checksums where known. Exit 0: all checks "
                                          "pass; 1: the copy is incomplete or wrong; 2: bad input.")
    ver.add_argument("name", metavar="NAME", help=names_help)
    ver.add_argument("--root", type=Path, default=None, help=root_help)
    ver.set_defaults(func=_run_verify)
