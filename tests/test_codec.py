"""The ONNX boundary: ORT matches torch, the card is enforced, bad models are refused clearly."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gsc_blocks.core.jscc import JSCCCodec
from gsc_blocks.core.models import CodecError, available_models, load_card

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_shipped_model_has_card_and_hashes():
    assert "deepjscc" in available_models(MODELS)
    card = load_card("deepjscc", MODELS)
    assert card["codec_id"] == 1 and abs(card["cbr"] - 1 / 6) < 1e-9
    for key in ("encoder", "decoder", "weights"):
        assert len(card["files"][key]["sha256"]) == 64
    assert card["training"]["command"] and card["training"]["data_manifest_sha256"]
    assert set(card["eval"]["psnr_db"]) == {"0", "5", "10", "15", "20"}


def test_onnx_runtime_matches_torch():
    torch = pytest.importorskip("torch")
    from gsc_models.export import load_weights_npz
    model = load_weights_npz("deepjscc", MODELS / "deepjscc")
    codec = JSCCCodec("deepjscc", MODELS)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)    # non-square: fully convolutional
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    snr = torch.full((1, 1), 7.0)
    with torch.no_grad():
        latent = model.encoder(x, snr)[0].numpy()
        decoded = model.decoder(torch.from_numpy(latent[None]), snr)[0].numpy()
    ort_latent = codec.encoder.run(None, {"image": x.numpy(), "snr_db": snr.numpy()})[0][0]
    ort_decoded = codec.decoder.run(None, {"symbols": latent[None], "snr_db": snr.numpy()})[0][0]
    assert np.max(np.abs(ort_latent - latent)) < 1e-4
    assert np.max(np.abs(ort_decoded - decoded)) < 1e-4
    symbols = codec.encode(image, 7.0)
    assert symbols.size == 8 * 8 * 12 and abs(np.mean(np.abs(symbols) ** 2) - 1.0) < 1e-3


def test_codec_rejects_wrong_image_size():
    codec = JSCCCodec("deepjscc", MODELS)
    with pytest.raises(ValueError, match="multiples of 4"):
        codec.encode(np.zeros((30, 32, 3), np.uint8), 10.0)


def _copy_model(tmp_path) -> Path:
    dst = tmp_path / "models" / "deepjscc"
    shutil.copytree(MODELS / "deepjscc", dst)
    return dst


def test_tampered_model_is_refused(tmp_path):
    folder = _copy_model(tmp_path)
    data = bytearray((folder / "decoder.onnx").read_bytes())
    data[-100] ^= 0xFF
    (folder / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(CodecError) as err:
        JSCCCodec("deepjscc", folder.parent)
    assert "decoder.onnx has SHA-256" in str(err.value) and "corrupted or was replaced" in str(err.value)


def test_missing_model_file_and_unknown_model(tmp_path):
    folder = _copy_model(tmp_path)
    (folder / "encoder.onnx").unlink()
    with pytest.raises(CodecError, match="encoder.onnx is missing"):
        JSCCCodec("deepjscc", folder.parent)
    with pytest.raises(CodecError, match="model 'swin' not found.*Available: \\['deepjscc'\\]"):
        JSCCCodec("swin", folder.parent)


def test_card_must_parse(tmp_path):
    folder = _copy_model(tmp_path)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(CodecError, match="card.json is not valid JSON"):
        JSCCCodec("deepjscc", folder.parent)


def test_a_broken_card_never_shadows_a_good_one(tmp_path):
    """A card without files (valid JSON), sorted before the real ones and claiming their codec
    id and refiner, does not stop them decoding: the registry and the refiner lookup skip it."""
    from gsc_blocks.core.refiner import refiner_name_for
    from gsc_blocks.core.registry import codec_for_id
    for folder in MODELS.iterdir():
        if (folder / "card.json").is_file():
            (tmp_path / folder.name).symlink_to(folder)
    good = JSCCCodec("deepjscc", str(tmp_path))
    (tmp_path / "aa_broken").mkdir()
    (tmp_path / "aa_broken" / "card.json").write_text(json.dumps({"codec_id": good.codec_id}))
    (tmp_path / "aa_broken_refiner").mkdir()
    (tmp_path / "aa_broken_refiner" / "card.json").write_text(json.dumps({"kind": "refiner", "codecs": ["deepjscc"]}))
    codec = codec_for_id(good.codec_id, str(tmp_path))
    assert codec.name == "deepjscc"
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    decoded = codec.decode(good.encode(image, 20.0), 32, 32, 20.0, 0)
    assert decoded.shape == image.shape
    assert refiner_name_for("deepjscc", str(tmp_path)) == "refiner"
