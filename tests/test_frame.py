"""Frame header: packing, gr-fec coding, CRC, robustness at 0 dB."""
import numpy as np
import pytest

from gsc_blocks.core.frame import (HEADER_OFDM_SYMBOLS, FrameHeader, HeaderCodec, HeaderError, Numerology,
                                   power_gain)

HEADER = FrameHeader(image_id=513, fragment_index=3, fragment_count=41, codec_id=1, rate_index=2,
                     power_level=1, refine_steps=4, payload_symbols=4796, height=512, width=768, session=1001,
                     user=5)


def test_header_round_trip():
    codec = HeaderCodec()
    symbols = codec.encode(HEADER)
    assert symbols.shape == (HEADER_OFDM_SYMBOLS * 48,)
    assert set(np.unique(symbols.real)) <= {-1.0, 1.0}
    assert codec.decode(2.0 * symbols.real) == HEADER
    assert codec.decode(2.0 * symbols.real).session == 1001 and codec.decode(2.0 * symbols.real).user == 5


def test_crc_rejects_a_corrupted_header():
    codec = HeaderCodec()
    soft = 2.0 * codec.encode(HEADER).real
    soft[:] = -soft            # every bit flipped: the code cannot recover it
    with pytest.raises(HeaderError):
        codec.decode(soft)


def test_field_overflow_is_named():
    bad = FrameHeader(**{**HEADER.as_dict(), "payload_symbols": 70000})
    with pytest.raises(HeaderError, match="payload_symbols"):
        HeaderCodec().encode(bad)
    odd = FrameHeader(**{**HEADER.as_dict(), "height": 30})
    with pytest.raises(HeaderError, match="multiple of 4"):
        HeaderCodec().encode(odd)


def test_header_survives_0db_awgn():
    codec = HeaderCodec()
    rng = np.random.default_rng(7)
    symbols = codec.encode(HEADER)
    ok = 0
    for _ in range(300):
        noisy = symbols + (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * np.sqrt(0.5)
        try:
            ok += codec.decode(2.0 * noisy.real) == HEADER
        except HeaderError:
            pass
    assert ok >= 297        # measured: about 1 failure in 1000 at 0 dB


def test_numerology_matches_gr_digital_defaults():
    n = Numerology()
    assert n.n_data == 48 and len(n.pilot_carriers) == 4
    sync1, sync2 = n.sync_words
    assert np.count_nonzero(sync1) == 26 and np.count_nonzero(sync2) == 52
    assert n.frame_samples(512) == (2 + HEADER_OFDM_SYMBOLS + 11) * 80
    assert power_gain(0) == 1.0 and abs(power_gain(1) - 10 ** -0.2) < 1e-12
    with pytest.raises(ValueError):
        Numerology(cp_len=64)


def test_headers_decode_and_reencode_in_batches():
    """decode_batch checks the CRC of many headers at once (a bit-by-bit linear map taken from
    gr-digital's CRC), and symbols() re-encodes what was decoded as encode() does (the map of
    gr-fec's encoder): random headers, one of them corrupted."""
    codec = HeaderCodec()
    rng = np.random.default_rng(3)
    headers = [FrameHeader(image_id=int(rng.integers(65536)), fragment_index=int(rng.integers(4096)),
                           fragment_count=int(rng.integers(1, 4097)), codec_id=int(rng.integers(32)),
                           rate_index=int(rng.integers(16)), power_level=int(rng.integers(16)),
                           refine_steps=int(rng.integers(16)), payload_symbols=int(rng.integers(1, 65536)),
                           height=4 * int(rng.integers(1024)), width=4 * int(rng.integers(1024)),
                           session=int(rng.integers(1024)), user=int(rng.integers(8))) for _ in range(12)]
    symbols = np.array([codec.encode(h) for h in headers])
    soft = 2.0 * symbols.real
    soft[5] = -soft[5]
    decoded, bits = codec.decode_batch(soft)
    assert isinstance(decoded[5], HeaderError) and "CRC" in str(decoded[5])
    good = [k for k in range(12) if k != 5]
    assert [decoded[k] for k in good] == [headers[k] for k in good]
    assert np.array_equal(codec.symbols(bits[good]), symbols[good])
