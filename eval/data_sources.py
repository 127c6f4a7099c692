"""Where each dataset comes from and how its archives become the design's layout.

A ``Recipe`` is data: the files to download (official URLs, published checksums), an installer
that turns the verified downloads into the dataset folder, and the counts ``data verify`` expects
(``expect`` in ``configs/datasets.yaml``). ``recipe(name, mirror=...)`` builds the one the CLI
uses; tests build the same objects with their own URLs, checksums and counts, and go through the
same download / install / verify code as a real run.

Checksums: each value below names its source. Where none is published (the Oxford / Paris image
tarballs, the DAVIS zip) the download is checked against its announced length and the extracted
copy against the expected file counts before it is moved into place.
"""

from __future__ import annotations

import pickle
import shutil
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from .archives import extract_tar_flat, extract_zip
from .datasets import get_spec
from .downloads import Checksum, RemoteFile
from .errors import BadInput
from .safe_pickle import RestrictedUnpickler

_CIFAR_PAGE = "md5 published on https://www.cs.toronto.edu/~kriz/cifar.html (same value in torchvision datasets/cifar.py)"
_GLUONCV_COCO = "sha1 from GluonCV scripts/datasets/mscoco.py (COCO publishes no checksums)"
_GLUONCV_ADE = "sha1 from GluonCV scripts/datasets/ade20k.py (the ADE20K site publishes no checksum)"
_REVISITOP_GND = ("md5 of the revisitop gnd pickles as listed in shared/data/README.md section 3 (copies of the "
                  "files filipradenovic/revisitop downloads; revisitop publishes no checksum)")

# The 20 Paris images that are not JPEGs but HTML error pages
# (https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/corrupt.txt). The revisited rParis6k imlist /
# qimlist exclude them (6,412 images in the tarballs - 20 corrupt - 70 queries = 6,322 database images),
# so they are not extracted.
PARIS_CORRUPT = frozenset(f"paris_{n}.jpg" for n in (
    "louvre_000136", "louvre_000146", "moulinrouge_000422", "museedorsay_001059", "notredame_000188",
    "pantheon_000284", "pantheon_000960", "pantheon_000974", "pompidou_000195", "pompidou_000196",
    "pompidou_000201", "pompidou_000467", "pompidou_000640", "sacrecoeur_000299", "sacrecoeur_000330",
    "sacrecoeur_000353", "triomphe_000662", "triomphe_000833", "triomphe_000863", "triomphe_000867"))


class Installer(Protocol):
    """Turns verified downloads (by file name) into the dataset folder ``dest``; returns a summary."""

    def install(self, archives: Mapping[str, Path], dest: Path, progress: bool) -> str: ...


@dataclass(frozen=True)
class Recipe:
    """How to obtain one registered dataset. ``instructions`` (no files) means: manual only."""

    name: str
    files: tuple[RemoteFile, ...] = ()
    installer: Installer | None = None
    expect: Mapping[str, Any] = field(default_factory=dict)
    instructions: str | None = None

    def mirrored(self, mirror: str | None) -> Recipe:
        """The same recipe with every file fetched from ``mirror`` (``<mirror>/<file name>``)."""
        return replace(self, files=tuple(f.mirrored(mirror) for f in self.files))

    def kept_checksums(self) -> dict[str, Checksum]:
        """Downloaded files stored unchanged in the dataset folder, with their checksums."""
        kept = getattr(self.installer, "kept", ())
        return {f.filename: f.checksum for f in self.files if f.filename in kept and f.checksum is not None}


# --------------------------------------------------------------------------- CIFAR

class _Py2DataUnpickler(RestrictedUnpickler):
    """The restricted unpickler, reading Python 2 ``str`` as latin-1 (the CIFAR pickles come from Python 2)."""

    def __init__(self, file: IO[bytes]) -> None:
        pickle.Unpickler.__init__(self, file, encoding="latin1")
        self.allow_numpy = True


@dataclass(frozen=True)
class CifarInstaller:
    """The CIFAR "python version" tarball -> ``train/<class>/<index>.png``, ``test/<class>/<index>.png``.

    ``<index>`` is the image's position in the official split (batches in order), zero-padded to 5
    digits so that file order is index order; class names come from the batches' meta file.
    """

    archive: str
    folder: str  # top folder inside the tarball
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    names_key: str
    labels_key: str

    def _load(self, tf: tarfile.TarFile, archive: Path, member: str) -> dict[str, Any]:
        name = f"{self.folder}/{member}"
        try:
            fh = tf.extractfile(name)
            if fh is None:
                raise KeyError(name)
            with fh:
                obj = _Py2DataUnpickler(fh).load()
        except KeyError:
            raise BadInput(archive, f"no member {name} (not the CIFAR python version?)") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise BadInput(archive, f"{name}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, dict):
            raise BadInput(archive, f"{name}: expected a dict, got {type(obj).__name__}")
        return obj

    def install(self, archives: Mapping[str, Path], dest: Path, progress: bool) -> str:
        archive = archives[self.archive]
        written = {}
        try:
            with tarfile.open(archive, "r:*") as tf:
                meta = self._load(tf, archive, self.meta)
                names = [str(n) for n in meta.get(self.names_key, [])]
                if not names or len(set(names)) != len(names):
                    raise BadInput(archive, f"{self.meta}: {self.names_key} missing or not unique")
                for split, members in (("train", self.train), ("test", self.test)):
                    for cls in names:
                        (dest / split / cls).mkdir(parents=True)
                    index = 0
                    for member in members:
                        batch = self._load(tf, archive, member)
                        data, labels = np.asarray(batch.get("data")), list(batch.get(self.labels_key, []))
                        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                            raise BadInput(archive, f"{member}: expected uint8 data [N, 3072] and N labels, got "
                                                    f"{data.dtype} {list(data.shape)} and {len(labels)} labels")
                        if any(not 0 <= int(y) < len(names) for y in labels):
                            raise BadInput(archive, f"{member}: label out of range [0, {len(names)})")
                        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                        for img, y in tqdm(zip(images, labels), total=len(labels), desc=f"{split} {member}",
                                           unit="img", disable=not progress, leave=False):
                            Image.fromarray(img).save(dest / split / names[int(y)] / f"{index:05d}.png")
                            index += 1
                    written[split] = index
        except (tarfile.TarError, zlib.error, EOFError) as exc:
            raise BadInput(archive, f"corrupt tar archive ({type(exc).__name__}: {exc})") from None
        return f"{written['train']:,} train + {written['test']:,} test PNGs in {len(names)} classes"


# --------------------------------------------------------------------------- revisited Oxford / Paris

@dataclass(frozen=True)
class RevisitopInstaller:
    """Image tarballs flattened into ``jpg/``, the gnd pickle copied unchanged (revisitop's own layout)."""

    image_archives: tuple[str, ...]
    gnd: str
    exclude: frozenset[str] = frozenset()

    @property
    def kept(self) -> tuple[str, ...]:
        return (self.gnd,)

    def install(self, archives: Mapping[str, Path], dest: Path, progress: bool) -> str:
        total, skipped = 0, []
        for name in self.image_archives:
            n, excluded = extract_tar_flat(archives[name], dest / "jpg", ".jpg", self.exclude, progress)
            total += n
            skipped += excluded
        shutil.copyfile(archives[self.gnd], dest / self.gnd)
        note = f"; left out {len(skipped)} known-corrupt images" if skipped else ""
        return f"{total:,} images in jpg/ and {self.gnd}{note}"


# --------------------------------------------------------------------------- zip archives (DAVIS, COCO, ADE20K)

@dataclass(frozen=True)
class ZipInstaller:
    """Zip archives extracted into the dataset folder, ``strip`` (a top folder) removed from member names."""

    archives: tuple[str, ...]
    strip: str = ""

    def install(self, archives: Mapping[str, Path], dest: Path, progress: bool) -> str:
        n = sum(extract_zip(archives[a], dest, self.strip, progress) for a in self.archives)
        return f"{n:,} files extracted"


# --------------------------------------------------------------------------- the recipes

IMAGENET_INSTRUCTIONS = """\
ImageNet (ILSVRC-2012) cannot be downloaded automatically: its terms of access need an account.
  1. Sign in at https://image-net.org/download-images.php and download, into {target}:
       ILSVRC2012_img_train.tar       about 138 GiB   md5 1d675b47d978889d74fa0da5fadfb00e
       ILSVRC2012_img_val.tar         about 6.3 GiB   md5 29b22e2961454d5413ddabcf34fc5622
       ILSVRC2012_devkit_t12.tar.gz   about 2.5 MiB   md5 fa75699e90414af021442c21a62c3abf
     (md5s as checked by torchvision datasets/imagenet.py)
  2. Unpack them into the expected layout, train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (1000 wnid folders
     each; 1,281,167 and 50,000 images). torchvision does exactly this, checking the md5s first:
       .venv/bin/python -c "from torchvision.datasets import ImageNet; ImageNet('{target}', split='train'); ImageNet('{target}', split='val')"
  3. Delete the three archives if you want the space back, then check the copy:
       attmask-eval data verify imagenet --root {root}"""


def _cifar(name: str) -> Recipe:
    if name == "cifar10":
        url, md5 = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"
        installer = CifarInstaller("cifar-10-python.tar.gz", "cifar-10-batches-py",
                                   tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                                   "batches.meta", "label_names", "labels")
    else:
        url, md5 = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"
        installer = CifarInstaller("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",),
                                   "meta", "fine_label_names", "fine_labels")
    return Recipe(name, (RemoteFile(url, Checksum("md5", md5, _CIFAR_PAGE)),), installer)


def _revisitop(name: str) -> Recipe:
    # Image tarballs: the URLs of filipradenovic/revisitop python/download.py (the "-v1" archives are the
    # current, face-blurred release; no checksum is published). Ground truth: the revisitop site.
    gnd_md5 = {"roxford5k": "f2b67579f625a587b5b0828dbf2e8eb0", "rparis6k": "2feae0a8257a5c6ca1b31b8eb73c8571"}[name]
    gnd = RemoteFile(f"http://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl",
                     Checksum("md5", gnd_md5, _REVISITOP_GND))
    if name == "roxford5k":
        images = ("https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz",)
        exclude: frozenset[str] = frozenset()
    else:
        images = tuple(f"https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_{i}-v1.tgz" for i in (1, 2))
        exclude = PARIS_CORRUPT
    files = (*(RemoteFile(u) for u in images), gnd)
    installer = RevisitopInstaller(tuple(f.filename for f in files[:-1]), gnd.filename, exclude)
    return Recipe(name, files, installer)


def _davis(name: str) -> Recipe:
    # URL from davischallenge.org/davis2017/code.html; no checksum is published.
    f = RemoteFile("https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip")
    return Recipe(name, (f,), ZipInstaller((f.filename,), strip="DAVIS/"))


def _coco(name: str) -> Recipe:
    # URLs from cocodataset.org/#download.
    files = (
        RemoteFile("http://images.cocodataset.org/zips/train2017.zip",
                   Checksum("sha1", "10ad623668ab00c62c096f0ed636d6aff41faca5", _GLUONCV_COCO)),
        RemoteFile("http://images.cocodataset.org/zips/val2017.zip",
                   Checksum("sha1", "4950dc9d00dbe1c933ee0170f5797584351d2a41", _GLUONCV_COCO)),
        RemoteFile("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                   Checksum("sha1", "8551ee4bb5860311e79dace7e79cb91e432e78b3", _GLUONCV_COCO)),
    )
    return Recipe(name, files, ZipInstaller(tuple(f.filename for f in files)))


def _ade20k(name: str) -> Recipe:
    # URL of the MIT Scene Parsing benchmark download (sceneparsing.csail.mit.edu).
    f = RemoteFile("http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",
                   Checksum("sha1", "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7", _GLUONCV_ADE))
    return Recipe(name, (f,), ZipInstaller((f.filename,), strip="ADEChallengeData2016/"))


def _imagenet(name: str) -> Recipe:
    return Recipe(name, instructions=IMAGENET_INSTRUCTIONS)


_BUILDERS = {"imagenet": _imagenet, "cifar10": _cifar, "cifar100": _cifar, "roxford5k": _revisitop,
             "rparis6k": _revisitop, "davis2017": _davis, "coco2017": _coco, "ade20k": _ade20k}


def preparable() -> list[str]:
    return sorted(_BUILDERS)


def expected_counts(name: str) -> Mapping[str, Any]:
    """``expect`` of the registry entry (what ``data verify`` checks), empty when none is given."""
    expect = get_spec(name).extra.get("expect", {})
    return expect if isinstance(expect, Mapping) else {}


def recipe(name: str, mirror: str | None = None) -> Recipe:
    """The recipe of a registered dataset; ``mirror``: a base URL serving the same file names."""
    spec = get_spec(name)
    if name not in _BUILDERS:
        if spec.kind == "builtin":
            raise BadInput(None, f"dataset {name!r} is built in: nothing to prepare")
        raise BadInput(None, f"dataset {name!r} has no download recipe (a test subset that ships with the shared "
                             f"data folder); preparable: {', '.join(preparable())}")
    return replace(_BUILDERS[name](name), expect=expected_counts(name)).mirrored(mirror)


def known_checksums(name: str) -> dict[str, Checksum]:
    """Published checksums of files kept unchanged in a dataset's folder (for ``data verify``)."""
    return recipe(name).kept_checksums() if name in _BUILDERS else {}
