"""The diffusion refiner: card, ONNX vs torch, the numpy DDIM sampler, and the decoder block's steps knob."""
import time
from pathlib import Path

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gsc_blocks.core import decode_service
from gsc_blocks.core.jscc import JSCCCodec
from gsc_blocks.core.models import CodecError, load_card
from gsc_blocks.core.images import load_image
from gsc_blocks.core.metrics import ms_ssim, psnr_db
from gsc_blocks.core.refiner import Refiner, refiner_for
from gsc_blocks.pdu_util import make_pdu, split_pdu
from gsc_blocks.semantic_decoder import semantic_decoder

MODELS = Path(__file__).resolve().parents[1] / "models"
SAMPLES = Path(__file__).resolve().parent / "data" / "samples"


@pytest.fixture(scope="module")
def refiner():
    return Refiner(models_dir=MODELS)


def _received(codec, image, snr_db, seed):
    symbols = codec.encode(image, snr_db)
    rng = np.random.default_rng(seed)
    noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) \
        * np.sqrt(10 ** (-snr_db / 10) / 2)
    return (symbols + noise).astype(np.complex64)


def test_card_lists_its_codecs_and_is_found_by_codec(refiner):
    card = load_card("refiner", MODELS)
    assert card["kind"] == "refiner" and "swinjscc" in card["codecs"]
    assert card["training"]["command"].startswith("python -m gsc_models.train_refiner")
    assert refiner_for("swinjscc", MODELS).name == "refiner"
    assert refiner_for("separation", MODELS) is None
    with pytest.raises(CodecError, match="not a codec"):
        JSCCCodec("refiner", MODELS)


def test_steps_zero_is_the_input_and_bad_steps_are_refused(refiner):
    image = load_image(SAMPLES / "cifar_0_cat.png")
    assert refiner.refine(image, 5.0, 0) is image
    with pytest.raises(ValueError, match="refine_steps 16: the refiner takes 0 to 15 steps"):
        refiner.refine(image, 5.0, 16)


def test_numpy_sampler_matches_torch(refiner):
    torch = pytest.importorskip("torch")
    from gsc_models.refiner import Denoiser, ddim_refine
    with np.load(MODELS / "refiner" / "weights.npz", allow_pickle=False) as data:
        model = Denoiser(**refiner.card["config"])
        model.load_state_dict({k: torch.from_numpy(data[k]) for k in data.files})
    model.eval()
    image = load_image(SAMPLES / "cifar_3_airplane.png")
    coarse = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    noise = torch.from_numpy(np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32))
    for steps in (1, 3):
        expected = ddim_refine(model, coarse, torch.full((1, 1), 4.0), steps, noise=noise)[0].numpy()
        got = refiner.refine(image, 4.0, steps, seed=7)
        assert np.max(np.abs(got.astype(int) - np.rint(expected.transpose(1, 2, 0) * 255).astype(int))) <= 1


def test_refinement_changes_the_image_but_stays_near_the_jscc_output(refiner):
    """On the committed CIFAR samples at 0 dB: the refiner alters every image, more steps alter it
    more, and one step stays within 0.5 dB (mean PSNR against the originals) of the JSCC output."""
    codec = JSCCCodec("swinjscc", MODELS)
    images = [load_image(p) for p in sorted(SAMPLES.glob("cifar_*.png"))]
    scores = {0: [], 1: [], 4: []}
    change = {1: [], 4: []}
    for k, image in enumerate(images):
        decoded = codec.decode(_received(codec, image, 0.0, k), 32, 32, 0.0)
        for steps in scores:
            refined = refiner.refine(decoded, 0.0, steps, seed=k)
            scores[steps].append(psnr_db(image, refined))
            if steps:
                change[steps].append(np.mean(np.abs(refined.astype(float) - decoded)))
    assert min(change[1]) > 0.2 and np.mean(change[4]) > np.mean(change[1]), change
    assert np.mean(scores[1]) > np.mean(scores[0]) - 0.5, scores


def test_one_step_raises_ms_ssim_at_low_snr(refiner):
    """The one-step estimate (the refiner's learned post-filter) is closer in MS-SSIM to the original than
    the swinjscc output, on the committed CIFAR samples at 0 and 5 dB (mean over the samples)."""
    codec = JSCCCodec("swinjscc", MODELS)
    images = [load_image(p) for p in sorted(SAMPLES.glob("cifar_*.png"))]
    for snr in (0.0, 5.0):
        gain = []
        for k, image in enumerate(images):
            decoded = codec.decode(_received(codec, image, snr, k), 32, 32, snr)
            gain.append(ms_ssim(image, refiner.refine(decoded, snr, 1, seed=k)) - ms_ssim(image, decoded))
        assert np.mean(gain) > 0.002, (snr, gain)


def _decode_through_block(fragments, control=None, refine_steps=-1, models_dir=MODELS):
    tb = gr.top_block()
    decoder = semantic_decoder(str(models_dir), 5.0, refine_steps)
    store = blocks.message_debug()
    tb.msg_connect(decoder, "out", store, "store")
    tb.start()
    if control is not None:
        decoder.to_basic_block()._post(pmt.intern("control"), pmt.to_pmt(control))
        time.sleep(0.2)
    for meta, symbols in fragments:
        decoder.to_basic_block()._post(pmt.intern("in"), make_pdu(meta, symbols))
    deadline = time.time() + 30
    while store.num_messages() < len(fragments) and time.time() < deadline:
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    return [split_pdu(store.get_message(i)) for i in range(store.num_messages())]


def _fragment(codec, image_id, steps, snr_db=3.0):
    image = load_image(SAMPLES / "cifar_1_ship.png")
    symbols = _received(codec, image, snr_db, image_id)
    meta = {"image_id": image_id, "fragment_index": 0, "fragment_count": 1, "codec_id": codec.codec_id,
            "rate_index": 0, "power_level": 0, "refine_steps": steps, "payload_symbols": symbols.size,
            "height": 32, "width": 32, "snr_est_db": snr_db, "snr_eff_db": snr_db}
    return meta, symbols


def test_decoder_block_refines_as_the_header_says_or_as_told(refiner):
    swin = JSCCCodec("swinjscc", MODELS)
    out = _decode_through_block([_fragment(swin, 1, 0), _fragment(swin, 2, 2)])
    by_id = {m["image_id"]: (m, p) for m, p in out}
    assert by_id[1][0]["refine_steps_applied"] == 0 and "refine_ms" not in by_id[1][0]
    assert by_id[2][0]["refine_steps_applied"] == 2 and by_id[2][0]["refine_ms"] > 0
    # the block's own setting (by control message) overrides the header
    out = _decode_through_block([_fragment(swin, 3, 0)], control={"refine_steps": 1})
    assert out[0][0]["refine_steps_applied"] == 1
    decoded = swin.decode(_fragment(swin, 3, 0)[1], 32, 32, 3.0)
    assert np.array_equal(out[0][1].reshape(32, 32, 3), refiner.refine(decoded, 3.0, 1, seed=3))


def test_decoder_block_delivers_unrefined_when_no_refiner_fits():
    """The separation baseline has no refiner: asked for 3 steps, the image still comes out, unrefined."""
    from gsc_blocks.core.separation import SEPARATION_CODEC_ID, SeparationCodec
    image = load_image(SAMPLES / "cifar_1_ship.png")
    symbols = SeparationCodec("webp").encode(image, 30.0, 7)      # 64qam-1/2: room for a WebP stream
    meta = {"image_id": 9, "fragment_index": 0, "fragment_count": 1, "codec_id": SEPARATION_CODEC_ID,
            "rate_index": 7, "power_level": 0, "refine_steps": 3, "payload_symbols": symbols.size,
            "height": 32, "width": 32, "snr_est_db": 30.0, "snr_eff_db": 30.0}
    out = _decode_through_block([(meta, symbols)])
    assert len(out) == 1 and out[0][0]["refine_steps_applied"] == 0
    assert out[0][0]["refine_note"] == "no refiner was trained for separation: decoded without refinement"


def test_tampered_refiner_costs_one_load_and_no_image(tmp_path, monkeypatch):
    """A refiner whose ONNX fails its SHA-256 check is tried once; every image still arrives, unrefined."""
    for name in ("swinjscc", "refiner"):
        (tmp_path / name).mkdir()
        for f in (MODELS / name).iterdir():
            (tmp_path / name / f.name).write_bytes(f.read_bytes())
    onnx = tmp_path / "refiner" / "denoiser.onnx"
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF
    onnx.write_bytes(bytes(data))
    loads = []
    original = decode_service.Refiner
    monkeypatch.setattr(decode_service, "Refiner", lambda *a, **k: loads.append(a) or original(*a, **k))
    swin = JSCCCodec("swinjscc", MODELS)
    out = _decode_through_block([_fragment(swin, 1, 2), _fragment(swin, 2, 2)], models_dir=tmp_path)
    assert sorted(m["image_id"] for m, _ in out) == [1, 2] and len(loads) == 1
    for meta, pixels in out:
        assert meta["refine_steps_applied"] == 0 and "denoiser.onnx has SHA-256" in meta["refine_note"]
        alone = swin.decode(_fragment(swin, meta["image_id"], 0)[1], 32, 32, 3.0)   # batching: float rounding
        assert np.abs(pixels.reshape(32, 32, 3).astype(int) - alone).max() <= 1
