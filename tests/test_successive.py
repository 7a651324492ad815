"""deepjscc_sr: one model, eight symbol groups; rate_index picks how many are sent and the
decoder refines the same image with each further group."""

import numpy as np
import pytest

from gsc_blocks.core.jscc import JSCCCodec
from gsc_blocks.core.models import load_card
from gsc_blocks.core.registry import codec_for_id
from gsc_blocks.core.images import load_image
from gsc_blocks.core.metrics import psnr_db

from conftest import MODELS, SAMPLES


@pytest.fixture(scope="module")
def codec():
    return JSCCCodec("deepjscc_sr", MODELS)


def test_card_describes_the_groups_and_their_eval(codec):
    card = load_card("deepjscc_sr", MODELS)
    assert card["codec_id"] == 2 and codec_for_id(2).name == "deepjscc_sr"
    assert card["successive_refinement"]["groups"] == 8 and codec.rate_count == 8
    table = card["eval"]["psnr_db_by_groups"]
    assert set(table) == {str(g) for g in range(1, 9)}
    assert card["training"]["command"].startswith("python -m gsc_models.train --model deepjscc_sr")


def test_rate_index_cbr_and_symbol_counts(codec):
    assert [codec.groups_sent(r) for r in range(8)] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert [codec.rate_index_for(c) for c in ("1/6", "1/12", "1/16", "1/24", "1/48")] == [0, 4, 5, 6, 7]
    assert abs(codec.cbr_at(4) - 1 / 12) < 1e-12
    image = load_image(SAMPLES / "cifar_0_cat.png")
    for rate in (0, 4, 7):
        symbols = codec.encode(image, 10.0, rate)
        assert symbols.size == codec.groups_sent(rate) * 64          # 64 symbols per group at 32x32
        assert abs(np.mean(np.abs(symbols) ** 2) - 1.0) < 1e-3       # the power goes to what is sent
        assert codec.decode(symbols, 32, 32, 10.0, rate).shape == (32, 32, 3)


def test_groups_are_a_prefix_of_the_full_latent(codec):
    """Fewer groups send the same leading symbols (rescaled), so a receiver that got the first
    groups of a full-rate image holds exactly what a lower rate would have sent."""
    image = load_image(SAMPLES / "cifar_1_ship.png")
    full = codec.encode(image, 10.0, 0)
    part = codec.encode(image, 10.0, 4)
    scale = np.vdot(full[:part.size], part).real / np.vdot(full[:part.size], full[:part.size]).real
    assert np.allclose(full[:part.size] * scale, part, atol=1e-5)


def test_bad_rates_are_refused_clearly(codec):
    image = load_image(SAMPLES / "cifar_0_cat.png")
    with pytest.raises(ValueError, match=r"rate_index 8: deepjscc_sr has rate indexes 0 to 7 \(cbr 1/6, cbr 7/48"):
        codec.encode(image, 10.0, 8)
    with pytest.raises(ValueError, match="CBR 1/5: deepjscc_sr offers cbr 1/6, cbr 7/48"):
        codec.rate_index_for("1/5")
    with pytest.raises(ValueError, match="256 symbols do not make a 32x32 image at rate_index 0"):
        codec.decode(codec.encode(image, 10.0, 4), 32, 32, 10.0, 0)
    with pytest.raises(ValueError, match=r"deepjscc has rate indexes 0 \(cbr 1/6\)"):
        JSCCCodec("deepjscc", MODELS).encode(image, 10.0, 1)


def test_psnr_rises_with_every_group_received(codec):
    """Successive refinement on the shipped model: at 10 dB each further group helps (mean over
    the committed CIFAR samples, the same noise draw per image and rate)."""
    images = [load_image(p) for p in sorted(SAMPLES.glob("cifar_*.png"))]
    means = []
    for rate in range(7, -1, -1):
        scores = []
        for k, image in enumerate(images):
            symbols = codec.encode(image, 10.0, rate)
            rng = np.random.default_rng(k)
            noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * np.sqrt(0.05)
            scores.append(psnr_db(image, codec.decode((symbols + noise).astype(np.complex64), 32, 32, 10.0, rate)))
        means.append(float(np.mean(scores)))
    assert all(b > a for a, b in zip(means, means[1:])), means
    assert means[-1] - means[0] > 3.0


def test_onnx_runtime_matches_torch_with_groups_dropped(codec):
    torch = pytest.importorskip("torch")
    from gsc_models.export import load_weights_npz
    from gsc_models.layers import keep_groups
    model = load_weights_npz("deepjscc_sr", MODELS / "deepjscc_sr")
    image = load_image(SAMPLES / "cifar_2_ship.png")
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    snr = torch.full((1, 1), 5.0)
    with torch.no_grad():
        latent, mask = keep_groups(model.encoder(x, snr), torch.tensor([3]))
        decoded = model.decoder(latent * mask, snr)[0].numpy()
    symbols = codec.encode(image, 5.0, 5)                              # rate index 5: 3 groups
    torch_symbols = latent[0, :3].numpy() + 1j * latent[0, 8:11].numpy()
    assert np.max(np.abs(symbols - torch_symbols.reshape(-1))) < 1e-4
    ort = codec.decode(symbols, 32, 32, 5.0, 5)
    assert np.max(np.abs(ort.astype(int) - np.rint(decoded.transpose(1, 2, 0) * 255).astype(int))) <= 1
