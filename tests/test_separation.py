"""The separation baseline: Pillow source codecs + CRC-32 + gr-fec LDPC + gr-digital QAM."""
import io

import numpy as np
import pytest
from PIL import Image

from gsc_blocks.core.models import CodecError
from gsc_blocks.core.registry import make_codec
from gsc_blocks.core.images import load_image
from gsc_blocks.core.digital import MCS_TABLE, LDPCCode as _LDPCCode, Modem as _Modem, mcs_index
from gsc_blocks.core.separation import SEPARATION_CODEC_ID, SeparationCodec, encode_source


@pytest.fixture
def image(samples):
    return load_image(sorted(samples.glob("cifar_*.png"))[0])


def awgn(symbols, snr_db, seed=0):
    rng = np.random.default_rng(seed)
    noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * np.sqrt(10 ** (-snr_db / 10) / 2)
    return (symbols + noise).astype(np.complex64)


def test_digital_path_delivers_the_source_stream_exactly_at_high_snr(image):
    codec = SeparationCodec("webp")
    rate = mcs_index("64qam-1/2")
    symbols = codec.encode(image, 0.0, rate)
    assert symbols.size == 512 and abs(np.mean(np.abs(symbols) ** 2) - 1) < 0.1     # CBR 1/6, unit power
    decoded = codec.decode(awgn(symbols, 30.0), 32, 32, 30.0, rate)
    _, stream = codec.source_stream(image, codec.capacity(32, 32, rate) - 4)
    assert 0 < len(stream) <= codec.capacity(32, 32, rate) - 4
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(stream)).convert("RGB")))


def test_best_source_codec_is_named_in_the_stream(image):
    codec = make_codec("separation")
    assert codec.codec_id == SEPARATION_CODEC_ID
    rate = mcs_index("64qam-1/2")
    decoded = codec.decode(awgn(codec.encode(image, 0.0, rate), 30.0), 32, 32, 30.0, rate)
    assert codec.last_detail in ("jpeg2000", "webp", "avif") and decoded.shape == (32, 32, 3)


def test_ldpc_corrects_errors_at_a_known_operating_point():
    """gr-fec's rate-1/2 n=1800 code, BPSK at Eb/N0 = 3 dB: raw errors, none after decoding."""
    code = _LDPCCode("n_1800_k_0902_gap_28.alist", 28)
    rng = np.random.default_rng(7)
    sigma = np.sqrt(1 / (2 * 10 ** 0.3 * code.k / code.n))
    raw_errors = 0
    for _ in range(5):
        bits = rng.integers(0, 2, code.k).astype(np.uint8)
        coded = code.encode(bits)
        y = (1 - 2.0 * coded) + sigma * rng.standard_normal(code.n)
        raw_errors += int(((y < 0) != coded).sum())
        assert np.array_equal(code.decode(2 * y / sigma ** 2), bits)
    assert raw_errors > 300


@pytest.mark.parametrize("bits_per_symbol", [1, 2, 4, 6])
def test_modem_is_unit_power_and_llr_signs_give_back_the_bits(bits_per_symbol):
    modem = _Modem(bits_per_symbol)
    assert abs(np.mean(np.abs(modem.points) ** 2) - 1) < 1e-5
    bits = np.random.default_rng(1).integers(0, 2, 600 * bits_per_symbol).astype(np.uint8)
    llr = modem.llr(modem.modulate(bits), 0.01)
    assert np.array_equal((llr < 0).astype(np.uint8), bits)


def test_crc_failure_is_a_clear_decode_error(image):
    codec = SeparationCodec("webp")
    rate = mcs_index("64qam-1/2")
    with pytest.raises(CodecError, match=r"CRC failed after LDPC decoding \(64qam-1/2"):
        codec.decode(awgn(codec.encode(image, 0.0, rate), 3.0), 32, 32, 3.0, rate)


def test_too_small_byte_budget_gives_a_clear_error(image):
    codec = SeparationCodec()
    with pytest.raises(ValueError, match=r"byte budget too small: 49 bytes hold no source stream .*"
                                         r"use a higher MCS or a larger CBR"):
        codec.encode(image, 0.0, mcs_index("qpsk-1/2"))
    with pytest.raises(ValueError, match="byte budget too small: 10 bytes cannot hold a jpeg2000 stream"):
        encode_source(image, "jpeg2000", 10)


def test_mcs_and_source_codec_names_are_checked():
    assert [m.name for m in MCS_TABLE][mcs_index("16qam-1/2")] == "16qam-1/2"
    with pytest.raises(ValueError, match="MCS '256qam' is not known"):
        mcs_index("256qam")
    with pytest.raises(CodecError, match="source codec 'bpg' is not known"):
        make_codec("separation-bpg")


def test_a_payload_sent_again_gives_the_same_symbols_from_the_cache():
    from gsc_blocks.core.digital import BitPipeline
    pipe = BitPipeline()
    payload = bytes(range(200))
    first = pipe.transmit(payload, 3000, 2)
    first[:] = 0                                   # the caller's copy, not the cache's
    again = pipe.transmit(payload, 3000, 2)
    assert np.array_equal(again, BitPipeline()._transmit(payload, 3000, 2))
    assert pipe.receive(again, 30.0, 2)[:200] == payload
    assert not np.array_equal(pipe.transmit(payload[:-1] + b"x", 3000, 2), again)
