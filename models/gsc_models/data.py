"""CIFAR-10 and Kodak loading from ../shared/datasets (or any folder of the same layout).

CIFAR-10 files are named <index>_<classname>.webp; decoded arrays are cached as
.npy under .cache/ (keyed by folder and file count) so later runs start at once.
"""
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
CACHE = REPO / ".cache"


def datasets_root(path: str | os.PathLike | None = None) -> Path:
    root = Path(path or os.environ.get("GSC_DATASETS", DEFAULT_DATASETS))
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset folder {root} not found: pass --data DIR or set GSC_DATASETS to the folder "
            "holding cifar10/ and kodak/ (../shared/datasets beside the repo by default)")
    return root


def manifest_sha256(root: Path) -> str:
    """SHA-256 of the dataset's MANIFEST.sha256, recorded in model cards."""
    manifest = root / "MANIFEST.sha256"
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "absent"


def _sort_key(path: Path):
    index = path.stem.split("_", 1)[0]
    return int(index) if index.isdigit() else path.stem


def load_cifar10(split: str, root: str | os.PathLike | None = None, limit: int | None = None):
    """Return (images uint8 [N,32,32,3], labels int64 [N], class_names) for split train|test."""
    base = datasets_root(root) / "cifar10"
    class_names = (base / "labels.txt").read_text().split()
    files = sorted((base / split).glob("*.webp"), key=_sort_key)
    if not files:
        raise FileNotFoundError(f"no .webp images in {base / split}")
    key = hashlib.sha1(f"{base.resolve()}|{split}|{len(files)}".encode()).hexdigest()[:12]
    cache = CACHE / f"cifar10_{split}_{key}.npz"
    if cache.exists():
        data = np.load(cache)
        images, labels = data["images"], data["labels"]
    else:
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        labels = np.array([class_names.index(f.stem.split("_", 1)[1]) for f in files], dtype=np.int64)
        CACHE.mkdir(exist_ok=True)
        np.savez(cache, images=images, labels=labels)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels, class_names


def load_kodak(root: str | os.PathLike | None = None):
    """Return a list of (name, uint8 HxWx3) for the 24 Kodak images."""
    base = datasets_root(root) / "kodak"
    return [(f.stem, np.asarray(Image.open(f).convert("RGB"))) for f in sorted(base.glob("*.png"))]
