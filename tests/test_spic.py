"""SPIC and C-SPIC: the shipped SPADE diffusion model (card, ORT vs torch), the payload (every bit
counted, lossless map, per-stream CRCs naming what failed), the digital path, the decoder block's
steps, and the segmenter-judged gain on the committed CamVid samples."""
import time
from pathlib import Path

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from PIL import Image

from gsc_blocks.core.config import ConfigError, load_config
from gsc_blocks.core.metrics import psnr_db
from gsc_blocks.core.models import CodecError, load_card
from gsc_blocks.core.registry import codec_for_id, make_codec
from gsc_blocks.core.segmentation import IoU, Segmenter
from gsc_blocks.core.spic import CSPIC_CODEC_ID, LEVELS, SPIC_CODEC_ID, SpicCodec, SpicSR, map_at, map_full, region
from gsc_blocks.pdu_util import make_pdu, split_pdu
from gsc_blocks.semantic_decoder import semantic_decoder

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CAMVID = REPO / "tests" / "data" / "camvid"
NAMES = sorted(p.stem for p in CAMVID.glob("*.webp"))


def frame(name=NAMES[0]):
    return np.asarray(Image.open(CAMVID / f"{name}.webp").convert("RGB"))


@pytest.fixture(scope="module")
def spic():
    return make_codec("spic", MODELS)


@pytest.fixture(scope="module")
def cspic():
    return make_codec("cspic", MODELS)


def test_card_names_its_segmenter_and_the_codecs_it_serves():
    card = load_card("spic_sr", MODELS)
    assert card["kind"] == "superres" and card["codecs"] == ["spic", "cspic"]
    seg = load_card(card["segmenter"], MODELS)
    assert card["segmenter_weights_sha256"] == seg["files"]["weights"]["sha256"]
    assert card["training"]["command"].startswith("python -m gsc_models.train_spic")
    # every level's coarse setting and map factor is one the model was trained on
    settings = {tuple(s) for s in card["degradation"]["settings"]}
    assert {(lv.coarse_factor, lv.quality) for lv in LEVELS} <= settings
    assert codec_for_id(SPIC_CODEC_ID, MODELS).name == "spic" and codec_for_id(CSPIC_CODEC_ID, MODELS).name == "cspic"


def test_onnx_sampler_matches_torch():
    torch = pytest.importorskip("torch")
    from gsc_models.cards import load_weights_npz
    from gsc_models.spic import ddim_sample, one_hot
    model = load_weights_npz("spic_sr", MODELS / "spic_sr")
    sr = SpicSR(models_dir=MODELS)
    image = frame()
    labels = Segmenter(models_dir=MODELS).predict(image)[0]
    from gsc_models.spic import coarse_image
    coarse = coarse_image(image, 4, 30)
    c = torch.from_numpy(coarse.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    noise = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 3, 192, 256)).astype(np.float32))
    for steps in (1, 3):
        expected = ddim_sample(model, c, one_hot(torch.from_numpy(labels[None])), steps, noise=noise)[0].numpy()
        got = sr.regenerate(coarse, labels, steps, seed=5)
        diff = np.abs(got.astype(int) - np.rint(expected.transpose(1, 2, 0) * 255).astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05, (steps, diff.max(), diff.mean())


def test_runtime_coarse_image_is_the_one_the_model_was_trained_on(spic):
    """The receiver's upsampled coarse image (from the bytes) equals the training degradation."""
    from gsc_models.spic import coarse_image, map_at as train_map_at
    image = frame()
    labels = spic.semantic_map(image)
    for index in (0, 3, 7):
        level = LEVELS[index]
        payload = spic.encode_level(image, index)
        out = spic.decode_payload(payload, 192, 256, steps=0)
        assert np.array_equal(out, coarse_image(image, level.coarse_factor, level.quality))
        assert np.array_equal(map_full(map_at(labels, level.map_factor), level.map_factor, 192, 256),
                              train_map_at(labels, level.map_factor))


def test_every_bit_is_counted_and_the_map_arrives_exactly(spic):
    image = frame()
    labels = spic.semantic_map(image)
    assert np.array_equal(labels, Segmenter(models_dir=MODELS).predict(image)[0])    # the TX's own map
    sizes = []
    for index, level in enumerate(LEVELS):
        payload = spic.encode_level(image, index)
        bits = spic.last_bits
        # header (8 bytes) + its CRC + map + CRC + coarse + CRC: nothing else, nothing left out
        assert bits["total"] == 8 * len(payload) == bits["map"] + bits["coarse"] + 8 * (8 + 4 + 4 + 4)
        assert payload[0] == index
        n_map = bits["map"] // 8
        from gsc_blocks.core.labelmap import decode_labels
        small = map_at(labels, level.map_factor)
        assert np.array_equal(decode_labels(payload[12:12 + n_map], *small.shape, 11), small)
        sizes.append(len(payload))
    assert sizes[0] < sizes[2] < sizes[5]           # more map resolution costs more
    assert sizes[0] * 8 / (192 * 256) < 0.12        # the lowest level is below every classical codec's floor


def _corrupt(payload: bytes, at: int) -> bytes:
    data = bytearray(payload)
    data[at] ^= 0x40
    return bytes(data)


def test_a_damaged_stream_names_itself(spic, cspic):
    image = frame()
    payload = spic.encode_level(image, 3)
    n_map = spic.last_bits["map"] // 8
    with pytest.raises(CodecError, match="label map failed its CRC"):
        spic.decode_payload(_corrupt(payload, 12 + 5), 192, 256)
    with pytest.raises(CodecError, match="coarse image failed its CRC"):
        spic.decode_payload(_corrupt(payload, 12 + n_map + 4 + 10), 192, 256)
    with pytest.raises(CodecError, match="payload header failed its CRC"):
        spic.decode_payload(_corrupt(payload, 2), 192, 256)
    # damage after the streams (the pipeline's zero padding) loses nothing
    padded = payload + bytes(40)
    assert np.array_equal(spic.decode_payload(_corrupt(padded, len(payload) + 3), 192, 256, steps=1),
                          spic.decode_payload(payload, 192, 256, steps=1))
    # C-SPIC: a damaged class stream drops that class's refinement only, and says so
    payload = cspic.encode_level(image, 3)
    classes = cspic.last_bits["classes"]
    assert classes, "the sample holds the default classes"
    damaged = _corrupt(payload, len(payload) - 6)
    out = cspic.decode_payload(damaged, 192, 256, steps=1)
    assert out.shape == (192, 256, 3) and "stream failed its CRC: not refined" in cspic.last_detail


def test_over_the_digital_path_and_a_failed_ldpc_is_a_lost_image(spic):
    image = frame()
    rng = np.random.default_rng(1)
    symbols = spic.encode(image, 10.0, 5)             # 16qam-1/2: fits the best level that fits
    detail = spic.last_detail
    assert detail.startswith("level ")
    noisy = symbols + (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * 0.05
    receiver = codec_for_id(SPIC_CODEC_ID, MODELS)
    out = receiver.decode(noisy.astype(np.complex64), 192, 256, 26.0, 5, steps=1, seed=0)
    level = int(detail.split()[1])
    assert np.array_equal(out, spic.decode_payload(spic.encode_level(image, level), 192, 256, steps=1, seed=0))
    with pytest.raises(CodecError, match="failed its CRC"):
        receiver.decode((symbols + (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(
            symbols.size)) * 1.5).astype(np.complex64), 192, 256, 0.0, 5, steps=1)
    spic.encode(image, 10.0, 0)                       # bpsk-1/4: the lowest levels still fit at CBR 1/6
    assert int(spic.last_detail.split()[1]) < level
    with pytest.raises(ValueError, match="byte budget too small"):
        SpicCodec(cbr=0.005, models_dir=MODELS).encode(image, 10.0, 0)


def test_regeneration_recovers_the_semantics_on_the_samples(spic):
    """On the three committed CamVid frames at the lowest map-/2 level: both segmenters find the classes
    in the regenerated frames far better than in the upsampled coarse image they start from."""
    images = np.stack([frame(n) for n in NAMES])
    truth = np.stack([np.asarray(Image.open(CAMVID / "labels" / f"{n}.png")) for n in NAMES])
    for name in ("camvid_segmenter", "camvid_segmenter_b"):
        seg = Segmenter(name, MODELS)
        scores = {}
        for steps in (0, 1):
            out = np.stack([spic.decode_payload(spic.encode_level(im, 2), 192, 256, steps=steps, seed=i)
                            for i, im in enumerate(images)])
            scores[steps] = IoU(11, 11).add(seg.predict(out).ravel(), truth.ravel()).mean()
        original = IoU(11, 11).add(seg.predict(images).ravel(), truth.ravel()).mean()
        assert scores[1] > scores[0] + 0.1 and scores[1] > 0.75 * original, (name, scores, original)


def test_cspic_sends_class_details_and_reports_bits_per_class(spic, cspic):
    """C-SPIC's class details replace the class regions of the upsampled coarse image (nothing else) with
    a sharper one; each class's bits are its stream, header entry and CRC; the rest is SPIC's payload."""
    image = frame()
    labels = cspic.semantic_map(image)
    payload = cspic.encode_level(image, 3)
    bits = cspic.last_bits
    full = map_full(map_at(labels, 2), 2, 192, 256)
    present = {cspic.class_names[c] for c in cspic.classes if (full == c).any()}
    assert set(bits["classes"]) == present and len(present) >= 2 and all(v > 0 for v in bits["classes"].values())
    assert bits["total"] - sum(bits["classes"].values()) == 8 * len(spic.encode_level(image, 3))
    base, refined = spic.decode_payload(spic.encode_level(image, 3), 192, 256), cspic.decode_payload(payload, 192, 256)
    inside = np.any([region(full, c) for c in cspic.classes], axis=0)
    assert np.array_equal(base[~inside], refined[~inside])
    assert psnr_db(image[inside], refined[inside]) > psnr_db(image[inside], base[inside]) + 1.0
    # with masks only, at a full-resolution map there is nothing to add: C-SPIC sends what SPIC sends
    masks_only = make_codec("cspic", MODELS, {"class_quality": -1, "class_masks": True})
    assert masks_only.encode_level(image, 5) == spic.encode_level(image, 5)
    # at a half-resolution map the masks go at full resolution and land in the map the model reads
    with_masks = masks_only.encode_level(image, 3)
    assert set(masks_only.last_bits["classes"]) == {masks_only.class_names[c] for c in masks_only.classes
                                                      if (labels == c).any()}
    assert masks_only.decode_payload(with_masks, 192, 256, steps=1).shape == (192, 256, 3)
    with pytest.raises(CodecError, match="Lamp.*not among the segmenter's classes"):
        make_codec("cspic", MODELS, {"classes": ["Pole", "Lamp"]})
    with pytest.raises(CodecError, match="levels are 0 to 7"):
        make_codec("spic-9", MODELS)


def test_yaml_names_the_cspic_classes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("codec:\n  name: cspic\n  classes: [Pole, Car]\n")
    assert load_config(path)["codec"]["classes"] == ["Pole", "Car"]
    path.write_text("codec:\n  classes: Pole\n")
    with pytest.raises(ConfigError, match="key codec.classes: value 'Pole' is not allowed: expected a non-empty list"):
        load_config(path)


def test_decoder_block_takes_the_header_steps_as_spic_steps(spic):
    image = frame()
    symbols = spic.encode(image, 20.0, 7)
    tb = gr.top_block()
    decoder = semantic_decoder(str(MODELS), 5.0, -1)
    store = blocks.message_debug()
    tb.msg_connect(decoder, "out", store, "store")
    tb.start()
    for image_id, steps in ((1, 0), (2, 2)):
        meta = {"image_id": image_id, "fragment_index": 0, "fragment_count": 1, "codec_id": SPIC_CODEC_ID,
                "rate_index": 7, "power_level": 0, "refine_steps": steps, "payload_symbols": symbols.size,
                "height": 192, "width": 256, "snr_est_db": 30.0, "snr_eff_db": 30.0}
        decoder.to_basic_block()._post(pmt.intern("in"), make_pdu(meta, symbols))
    deadline = time.time() + 60
    while store.num_messages() < 2 and time.time() < deadline:
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    out = {m["image_id"]: (m, p.reshape(192, 256, 3)) for m, p in
           (split_pdu(store.get_message(i)) for i in range(store.num_messages()))}
    assert out[1][0]["refine_steps_applied"] == 0 and out[2][0]["refine_steps_applied"] == 2
    assert out[1][0]["codec"] == "spic" and out[1][0]["codec_detail"].startswith("level ")
    assert not np.array_equal(out[1][1], out[2][1])
    assert psnr_db(image, out[2][1]) > 20.0
