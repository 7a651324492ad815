"""CamVid (SegNet's 11-class version) at the working resolution, from ../shared/datasets/camvid.

Frames are 480x360; the working resolution is 256x192 (8/15 per side): images are
area-averaged (Pillow's BOX filter), label maps take the nearest label. Label 11 is
void and is ignored by training and by every IoU. Decoded arrays are cached as .npy
under .cache/ so later runs start at once.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from .data import CACHE, datasets_root

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]
VOID = 11
COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
           (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0)]
WORKING_SIZE = (192, 256)          # height, width: the 480x360 frames resized by 8/15


def resize_frame(image: np.ndarray, label: np.ndarray | None = None, size=WORKING_SIZE):
    """A 360x480 frame (and its label map) at the working resolution."""
    h, w = size
    small = np.asarray(Image.fromarray(image).resize((w, h), Image.BOX))
    if label is None:
        return small
    return small, np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def load_camvid(split: str, root=None, size=WORKING_SIZE):
    """(images uint8 [N,H,W,3], labels uint8 [N,H,W] with void = 11, names) of split train|val|test."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"CamVid split {split!r}: expected train, val or test")
    base = datasets_root(root) / "camvid"
    files = sorted((base / split).glob("*.webp"))
    if not files:
        raise FileNotFoundError(f"no CamVid images in {base / split}: pass --data DIR (the folder holding camvid/)")
    names = [f.stem for f in files]
    key = f"camvid_{split}_{len(files)}_{size[0]}x{size[1]}"
    images_npy, labels_npy = CACHE / f"{key}_images.npy", CACHE / f"{key}_labels.npy"
    if images_npy.exists() and labels_npy.exists():
        return np.load(images_npy), np.load(labels_npy), names
    images, labels = [], []
    for f in files:
        image = np.asarray(Image.open(f).convert("RGB"))
        label = np.asarray(Image.open(base / f"{split}annot" / f"{f.stem}.png"))
        small, small_label = resize_frame(image, label, size)
        images.append(small)
        labels.append(small_label)
    images, labels = np.stack(images), np.stack(labels).astype(np.uint8)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(images_npy, images)
    np.save(labels_npy, labels)
    return images, labels, names


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Median-frequency balancing (as SegNet trains on CamVid): weight = median freq / class freq."""
    counts = np.bincount(labels[labels != VOID].ravel(), minlength=len(CLASSES)).astype(np.float64)
    freq = counts / counts.sum()
    return (np.median(freq) / np.maximum(freq, 1e-12)).astype(np.float32)


def confusion(pred: np.ndarray, truth: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    """[n, n] counts of (true class, predicted class) over the pixels whose truth is not void."""
    keep = truth != VOID
    return np.bincount(truth[keep].astype(np.int64) * n + pred[keep].astype(np.int64),
                       minlength=n * n).reshape(n, n)


def class_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix (NaN for a class absent from both)."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)
