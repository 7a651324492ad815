"""The CamVid semantic metric and extractor: a segmenter trained here (ONNX, SHA-256 checked
against its card), and IoU over its classes with void ignored.

models/camvid_segmenter, and the separately trained models/camvid_segmenter_b, so no
codec is judged only by the network whose map it carries.
"""
import numpy as np

from .models import OnnxModel

SEGMENTER = "camvid_segmenter"
SECOND_SEGMENTER = "camvid_segmenter_b"


class Segmenter(OnnxModel):
    kind, role = "segmenter", "segmenter"

    def __init__(self, name: str = SEGMENTER, models_dir=None, providers=None):
        super().__init__(name, models_dir, providers)
        self.classes = list(self.card["classes"])
        self.void = int(self.card["void_label"])
        self.size_multiple = int(self.card["size_multiple"])

    def predict(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        """uint8 [N,H,W,3] (or one HxWx3 image) -> class ids uint8 [N,H,W]."""
        return self.predict_features(images, batch)[0]

    def predict_features(self, images: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [N,H,W,3] (or one HxWx3 image) -> (class ids uint8 [N,H,W], features float32 [N,C]):
        the features are the segmenter's bottleneck averaged over the image."""
        images = np.asarray(images, np.uint8)
        images = images[None] if images.ndim == 3 else images
        h, w = images.shape[1:3]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"image is {w}x{h}: {self.name} needs sides that are multiples of "
                             f"{self.size_multiple}")
        labels, features = [], []
        for i in range(0, len(images), batch):
            logits, feats = self.session.run(None, {"image": images[i:i + batch].transpose(0, 3, 1, 2).astype(
                np.float32) / 255.0})
            labels.append(logits.argmax(1).astype(np.uint8))
            features.append(feats)
        return np.concatenate(labels), np.concatenate(features)


class IoU:
    """Intersection and union per class, accumulated over images; void pixels of the truth are left out."""

    def __init__(self, n_classes: int, void: int):
        self.n, self.void = n_classes, void
        self.intersection = np.zeros(n_classes, np.int64)
        self.union = np.zeros(n_classes, np.int64)

    def add(self, pred: np.ndarray, truth: np.ndarray) -> "IoU":
        keep = truth != self.void
        p, t = pred[keep].astype(np.int64), truth[keep].astype(np.int64)
        both = np.bincount(t[p == t], minlength=self.n)[:self.n]
        self.intersection += both
        self.union += np.bincount(p, minlength=self.n)[:self.n] + np.bincount(t, minlength=self.n)[:self.n] - both
        return self

    def per_class(self) -> np.ndarray:
        """IoU of each class (NaN for a class in neither the truth nor the prediction)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)

    def mean(self) -> float:
        return float(np.nanmean(self.per_class()))
