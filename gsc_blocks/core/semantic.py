"""The semantic metric: top-1 accuracy of a CIFAR-10 classifier trained here,
on received images against the true labels (and on the originals, for scale).

The classifier is models/cifar_classifier (ONNX, SHA-256 checked against its card).
"""
from pathlib import Path

import numpy as np

from .models import OnnxModel

CLASSIFIER = "cifar_classifier"


class Classifier(OnnxModel):
    kind, role = "classifier", "classifier"

    def __init__(self, name: str = CLASSIFIER, models_dir=None, providers=None):
        super().__init__(name, models_dir, providers)
        self.classes = list(self.card["classes"])

    def predict(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        """uint8 [N,32,32,3] (or one HxWx3 image) -> class indices [N]."""
        images = np.asarray(images, np.uint8)
        if images.ndim == 3:
            images = images[None]
        if images.shape[1:] != (32, 32, 3):
            raise ValueError(f"the classifier takes 32x32 RGB images, not {images.shape[2]}x{images.shape[1]}")
        out = []
        for start in range(0, len(images), batch):
            x = images[start:start + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            out.append(self.session.run(None, {"image": x})[0].argmax(1))
        return np.concatenate(out)

    def label_index(self, name: str) -> int:
        return self.classes.index(name)


def cifar_label(path) -> str:
    """CIFAR-10 files in shared/datasets are <index>_<class>.webp (the samples: cifar_<index>_<class>.png)."""
    return Path(path).stem.rsplit("_", 1)[-1]
