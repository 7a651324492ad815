"""The CamVid semantic metric and extractor: a segmenter trained here (ONNX, SHA-256 checked
against its card), and IoU over the 11 classes with void ignored.

models/camvid_segmenter (and the separately trained models/camvid_segmenter_b, so no
codec is judged only by the network whose map it carries).
"""
import numpy as np

from .models import check_card, load_card, verified_session

SEGMENTER = "camvid_segmenter"
SECOND_SEGMENTER = "camvid_segmenter_b"


class Segmenter:
    def __init__(self, name: str = SEGMENTER, models_dir=None, providers=None):
        self.card = check_card(load_card(name, models_dir), "segmenter")
        self.name = name
        self.classes = list(self.card["classes"])
        self.void = int(self.card["void_label"])
        self.size_multiple = int(self.card["size_multiple"])
        self.session = verified_session(self.card, "segmenter", providers)

    def model_files(self) -> dict:
        return {self.name: {"segmenter": self.card["files"]["segmenter"]["sha256"]}}

    def predict(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        """uint8 [N,H,W,3] (or one HxWx3 image) -> class ids uint8 [N,H,W]."""
        images = np.asarray(images, np.uint8)
        if images.ndim == 3:
            images = images[None]
        h, w = images.shape[1:3]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"image is {w}x{h}: {self.name} needs sides that are multiples of "
                             f"{self.size_multiple}")
        out = []
        for start in range(0, len(images), batch):
            x = images[start:start + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            out.append(self.session.run(None, {"image": x})[0].argmax(1).astype(np.uint8))
        return np.concatenate(out)


def confusion(pred: np.ndarray, truth: np.ndarray, n_classes: int, void: int) -> np.ndarray:
    """[n, n] counts of (true class, predicted class) over the pixels whose truth is not void."""
    keep = truth != void
    return np.bincount(truth[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64),
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_iou(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix (NaN for a class absent from both truth and prediction)."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou(conf: np.ndarray) -> float:
    return float(np.nanmean(class_iou(conf)))
