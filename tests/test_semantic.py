"""The semantic metric: the CIFAR-10 classifier trained here, shipped as ONNX with its card."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gsc_blocks.core.models import CodecError, load_card
from gsc_blocks.core.images import load_image
from gsc_blocks.core.semantic import Classifier, cifar_label

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_classifier_card_and_accuracy_on_the_samples(samples):
    card = load_card("cifar_classifier", MODELS)
    assert card["eval"]["top1_accuracy"] > 0.7 and card["training"]["command"].startswith("python -m")
    assert len(card["classes"]) == 10 and len(card["files"]["classifier"]["sha256"]) == 64
    classifier = Classifier(models_dir=MODELS)
    files = sorted(samples.glob("cifar_*.png"))
    predicted = classifier.predict(np.stack([load_image(f) for f in files]))
    truth = np.array([classifier.label_index(cifar_label(f)) for f in files])
    assert np.mean(predicted == truth) >= 0.75
    with pytest.raises(ValueError, match="32x32 RGB images, not 768x512"):
        classifier.predict(load_image(samples / "kodak_kodim23.png"))


def test_onnx_runtime_matches_torch(samples):
    torch = pytest.importorskip("torch")
    from gsc_models.classifier import CifarClassifier
    card = load_card("cifar_classifier", MODELS)
    model = CifarClassifier(**card["config"]).eval()
    with np.load(MODELS / "cifar_classifier" / "weights.npz", allow_pickle=False) as data:
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    images = np.stack([load_image(f) for f in sorted(samples.glob("cifar_*.png"))])
    with torch.no_grad():
        logits = model(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)).numpy()
    classifier = Classifier(models_dir=MODELS)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    ort_logits = classifier.session.run(None, {"image": x})[0]
    assert np.max(np.abs(ort_logits - logits)) < 1e-3
    assert np.array_equal(classifier.predict(images), logits.argmax(1))


def test_tampered_classifier_is_refused(tmp_path):
    folder = tmp_path / "cifar_classifier"
    shutil.copytree(MODELS / "cifar_classifier", folder)
    data = bytearray((folder / "classifier.onnx").read_bytes())
    data[-50] ^= 0xFF
    (folder / "classifier.onnx").write_bytes(bytes(data))
    with pytest.raises(CodecError, match="classifier.onnx has SHA-256 .* corrupted or was replaced"):
        Classifier(models_dir=tmp_path)
    json.loads((folder / "card.json").read_text())  # the card itself is untouched


def test_classifier_is_not_a_codec():
    from gsc_blocks.core.jscc import JSCCCodec
    with pytest.raises(CodecError, match="model 'cifar_classifier' is a classifier, not a codec"):
        JSCCCodec("cifar_classifier", MODELS)
