"""The CamVid segmenters: shipped as ONNX with cards, ORT agrees with torch, and they segment the
committed CamVid samples; IoU is computed over the 11 classes with void ignored."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gsc_blocks.core.models import CodecError
from gsc_blocks.core.segmentation import SECOND_SEGMENTER, SEGMENTER, IoU, Segmenter

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CAMVID = REPO / "tests" / "data" / "camvid"


def samples():
    names = sorted(p.stem for p in CAMVID.glob("*.webp"))
    images = np.stack([np.asarray(Image.open(CAMVID / f"{n}.webp").convert("RGB")) for n in names])
    labels = np.stack([np.asarray(Image.open(CAMVID / "labels" / f"{n}.png")) for n in names])
    return images, labels


def test_iou_counts_every_class_and_ignores_void():
    truth = np.array([[0, 0, 1, 11], [2, 2, 1, 11]])
    pred = np.array([[0, 1, 1, 5], [2, 0, 1, 0]])
    iou = IoU(3, 11).add(pred, truth)
    assert iou.intersection.tolist() == [1, 2, 1] and iou.union.tolist() == [3, 3, 2]
    assert np.allclose(iou.per_class(), [1 / 3, 2 / 3, 1 / 2]) and iou.mean() == pytest.approx(0.5)
    iou.add(np.array([[2]]), np.array([[2]]))             # accumulates over images
    assert iou.per_class()[2] == pytest.approx(2 / 3)
    assert np.isnan(IoU(2, 11).per_class()).all()


@pytest.mark.parametrize("name", [SEGMENTER, SECOND_SEGMENTER])
def test_segmenter_card_and_its_test_miou(name):
    card = json.loads((MODELS / name / "card.json").read_text())
    assert card["kind"] == "segmenter" and len(card["classes"]) == 11 and card["void_label"] == 11
    assert card["working_size"] == [192, 256]
    assert card["eval"]["dataset"].startswith("CamVid test, all 233 frames")
    # the first is the transmitter's extractor and the metric: the floor on the originals;
    # the second is a cross-check, trained separately
    assert card["eval"]["miou"] >= (0.45 if name == SEGMENTER else 0.35)
    assert set(card["eval"]["class_iou"]) == set(card["classes"])


def test_the_two_segmenters_are_trained_separately():
    a, b = (json.loads((MODELS / n / "card.json").read_text()) for n in (SEGMENTER, SECOND_SEGMENTER))
    assert a["files"]["weights"]["sha256"] != b["files"]["weights"]["sha256"]
    assert (a["config"], a["training"]["seed"]) != (b["config"], b["training"]["seed"])


@pytest.mark.parametrize("name", [SEGMENTER, SECOND_SEGMENTER])
def test_segmenters_label_the_committed_samples(name):
    images, labels = samples()
    segmenter = Segmenter(name, MODELS)
    pred = segmenter.predict(images)
    assert pred.shape == labels.shape and pred.dtype == np.uint8
    keep = labels != segmenter.void
    assert np.mean(pred[keep] == labels[keep]) > 0.7      # pixel accuracy (0.77 on these for the first)
    assert IoU(11, segmenter.void).add(pred, labels).mean() > 0.35


def test_onnx_runtime_agrees_with_torch():
    import torch

    from gsc_models.cards import load_weights_npz
    images, _ = samples()
    model = load_weights_npz(SEGMENTER, MODELS / SEGMENTER).eval()
    with torch.no_grad():
        logits, features = (t.numpy() for t in model.forward_features(
            torch.from_numpy(images[:1]).permute(0, 3, 1, 2).float() / 255.0))
    segmenter = Segmenter(SEGMENTER, MODELS)
    ort, ort_features = segmenter.session.run(
        None, {"image": images[:1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0})
    assert np.abs(ort - logits).max() < 1e-3
    assert (ort.argmax(1) == logits.argmax(1)).mean() > 0.999
    # the second output: the bottleneck averaged over the frame (bench codec's Frechet distance)
    assert ort_features.shape == (1, 8 * model.config["width"]) and np.abs(ort_features - features).max() < 1e-3
    labels, feats = segmenter.predict_features(images)
    assert np.array_equal(labels, segmenter.predict(images)) and feats.shape == (3, 8 * model.config["width"])


def test_bad_size_and_wrong_kind_are_refused():
    segmenter = Segmenter(SEGMENTER, MODELS)
    with pytest.raises(ValueError, match="multiples of 8"):
        segmenter.predict(np.zeros((190, 256, 3), np.uint8))
    with pytest.raises(CodecError, match="is a codec, not a segmenter"):
        Segmenter("deepjscc", MODELS)
