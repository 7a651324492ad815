"""The analog OFDM link in a real GNU Radio flowgraph with known unit-power symbols:
ofdm_analog_tx -> gsc_channel (gr-channels) -> ofdm_analog_rx."""
import json

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr

from gsc_blocks.channel import gsc_channel
from gsc_blocks.bench.frames import (bench_frames, fit_logistic_loss, fragment_meta, gaussian_symbols,
                                   known_symbol_link, send_and_collect)
from gsc_blocks.core.config import CORRELATOR_REACH
from gsc_blocks.ofdm_analog_rx import CFO_SEARCH_STEP, cfo_search_offsets, ofdm_analog_rx
from gsc_blocks.ofdm_analog_tx import ofdm_analog_tx

MILD_3TAP = [1.0, 0.25, 0.1j]           # ZF loss 0.09 dB
HARSH_3TAP = [0.9, 0.35j, 0.15]         # ZF loss 2.4 dB


def run_known_symbols(snr_db, cfo=0.0, taps=(1.0,), n_frames=12, n_symbols=512, seed=1, power_level=0,
                      payload_power=1.0, fading="none", cfo_search=1.0, idle_s=None):
    """Send n_frames of known complex Gaussian symbols (unit power unless payload_power says otherwise),
    frame i in image slot i; return (sent, received meta/symbols, rx)."""
    channel = gsc_channel(snr_db=snr_db, cfo=cfo, taps=list(taps), amplitude=0.1, seed=seed, fading=fading)
    return known_symbol_link(channel, n_frames, n_symbols, seed, power_level, payload_power,
                             ofdm={"cfo_search": cfo_search}, idle_s=idle_s)


def mse_db(sent, received):
    errors = [np.mean(np.abs(symbols - sent[meta["image_id"]]) ** 2) for meta, symbols in received]
    return float(-10 * np.log10(np.mean(errors)))


@pytest.mark.parametrize("snr_db", [10.0, 20.0, 30.0])
def test_mse_matches_configured_snr_with_cfo_and_multipath(snr_db):
    sent, received, _ = run_known_symbols(snr_db, cfo=0.03, taps=MILD_3TAP)
    assert len(received) == len(sent)
    assert abs(mse_db(sent, received) - snr_db) < 1.0


@pytest.mark.parametrize("snr_db", [0.0, 5.0, 10.0, 15.0, 20.0, 25.0])
def test_mean_snr_estimate_within_1db(snr_db):
    sent, received, _ = run_known_symbols(snr_db, cfo=0.01, n_frames=16)
    assert len(received) >= len(sent) - 1           # at 0 dB a frame may be missed
    estimate = np.mean([meta["snr_est_db"] for meta, _ in received])
    assert abs(estimate - snr_db) < 1.0


@pytest.mark.parametrize("cfo", [0.3, -0.45, 0.8])
def test_correlator_bank_finds_every_frame_at_large_cfo(cfo):
    """Boards without a shared reference differ by a few ppm: 0.3 carrier spacing is 4.7 kHz at
    1 MS/s, under 2 ppm at 2.45 GHz. The default receiver searches 1 spacing either way."""
    sent, received, rx = run_known_symbols(5.0, cfo=cfo)
    assert len(rx.cfo_offsets) == 11
    assert sorted(meta["image_id"] for meta, _ in received) == list(range(len(sent)))
    assert abs(mse_db(sent, received) - 5.0) < 1.0


def test_one_correlator_finds_no_frame_at_0_3_carrier_spacing():
    """What the bank is for: the preamble's phase turns 0.75 cycle over its length, and the
    correlation peak falls about 10 dB, below the threshold even at 25 dB SNR."""
    _, received, rx = run_known_symbols(25.0, cfo=0.3, n_frames=6, cfo_search=0.1, idle_s=1.0)
    assert len(rx.cfo_offsets) == 1 and received == []


def test_cfo_search_offsets_cover_the_range_at_0_2_spacing():
    assert cfo_search_offsets(0.0).tolist() == [0.0] and cfo_search_offsets(0.1).tolist() == [0.0]
    assert np.allclose(cfo_search_offsets(0.5), [-0.4, -0.2, 0.0, 0.2, 0.4])
    assert cfo_search_offsets(1.0).size == 11 and np.isclose(cfo_search_offsets(1.0).max(), 1.0)
    assert CORRELATOR_REACH == CFO_SEARCH_STEP / 2         # what the config check allows one correlator
    with pytest.raises(ValueError, match="cfo_search 1.2: expected 0 to 1 carrier spacing"):
        ofdm_analog_rx(cfo_search=1.2)


def test_effective_snr_predicts_mse_on_a_selective_channel():
    sent, received, _ = run_known_symbols(20.0, cfo=0.02, taps=HARSH_3TAP)
    assert len(received) == len(sent)
    predicted = float(-10 * np.log10(np.mean([10 ** (-m["snr_eff_db"] / 10) for m, _ in received])))
    assert abs(mse_db(sent, received) - predicted) < 0.5
    assert mse_db(sent, received) < 20.0 - 1.5        # ZF noise enhancement is real


def test_large_fragments_and_header_fields_survive():
    sent, received, rx = run_known_symbols(15.0, n_frames=3, n_symbols=4796)
    assert sorted(meta["image_id"] for meta, _ in received) == [0, 1, 2]
    meta, symbols = received[0]
    assert symbols.size == 4796 and meta["payload_symbols"] == 4796
    assert (meta["height"], meta["width"], meta["codec_id"]) == (32, 32, 1)
    # A detector false alarm now and then is expected and harmless (its header fails the CRC).
    assert rx.header_decoder.frames_ok == 3


def test_frames_after_loud_payloads_are_all_detected():
    """JSCC fragments are not unit power one by one (a Kodak image has fragments at
    2.8x the mean); the detector's threshold follows the mean correlation power,
    payload included, and must still find every frame and raise no false header."""
    _, received, rx = run_known_symbols(10.0, n_frames=12, n_symbols=4800, payload_power=3.0)
    assert sorted(meta["image_id"] for meta, _ in received) == list(range(12))
    assert rx.header_decoder.frames_failed == 0


def test_power_level_is_undone_at_the_receiver():
    sent, received, _ = run_known_symbols(20.0, n_frames=6, power_level=3)     # -6 dB
    assert len(received) == len(sent)
    assert abs(mse_db(sent, received) - 14.0) < 1.0


def test_rayleigh_fading_channel_from_gr_channels():
    """Slow flat Rayleigh fading: frames still decode; the receiver's SNR estimate follows the fade."""
    tb = gr.top_block()
    tx = ofdm_analog_tx(amplitude=0.1)
    channel = gsc_channel(snr_db=25.0, fading="rayleigh", doppler=2e-6, amplitude=0.1, seed=3)
    rx = ofdm_analog_rx()
    store = blocks.message_debug()
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", store, "store")
    rng = np.random.default_rng(3)
    tb.start()
    received = send_and_collect(tx, store, [(fragment_meta(i, 512), gaussian_symbols(rng, 512)) for i in range(30)], 30,
                                timeout=10.0)
    tb.stop()
    tb.wait()
    metas = [meta for meta, _ in received]
    assert len(metas) >= 20                      # deep fades may cost a few frames
    estimates = np.array([m["snr_est_db"] for m in metas])
    assert estimates.std() > 0.5                 # the fade is seen frame to frame


def test_snr_trace_changes_the_noise_per_image_slot():
    """The slot tag set by the frame builder selects the trace's SNR for that frame."""
    trace = [5.0, 25.0, 12.0, 25.0, 5.0, 18.0]
    tb = gr.top_block()
    tx = ofdm_analog_tx(amplitude=0.1)
    channel = gsc_channel(amplitude=0.1, snr_trace=trace, seed=5)
    rx = ofdm_analog_rx()
    store = blocks.message_debug()
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", store, "store")
    rng = np.random.default_rng(5)
    fragments = [(dict(fragment_meta(slot, 2000, slot=slot), fragment_index=k, fragment_count=3),
                  gaussian_symbols(rng, 2000)) for slot in range(len(trace)) for k in range(3)]
    tb.start()
    received = send_and_collect(tx, store, fragments, len(fragments))
    tb.stop()
    tb.wait()
    per_slot = {}
    for meta, _ in received:
        per_slot.setdefault(meta["image_id"], []).append(meta["snr_est_db"])
    assert sorted(per_slot) == list(range(len(trace)))
    for slot, estimates in per_slot.items():
        assert abs(np.mean(estimates) - trace[slot]) < 1.0, (slot, estimates)


def test_snr_estimate_is_at_reference_power_whatever_the_power_level():
    _, received, _ = run_known_symbols(20.0, n_frames=6, power_level=5)      # -10 dB payload and header
    assert len(received) == 6
    assert abs(np.mean([m["snr_est_db"] for m, _ in received]) - 20.0) < 1.0
    assert abs(np.mean([m["snr_eff_db"] for m, _ in received]) - 10.0) < 1.0


def test_rayleigh_block_fading_holds_one_gain_per_image_slot():
    """Each frame sees its slot's gain from block_fading_gains: the receiver's SNR estimate and the
    equalized symbols' MSE follow 20 dB + |h|^2 in dB, frame by frame; deep fades may lose a frame."""
    from gsc_blocks.core.fading import block_fading_gains
    n_frames, seed = 16, 5
    fade_db = 10 * np.log10(np.abs(block_fading_gains(n_frames, seed)) ** 2)
    sent, received, _ = run_known_symbols(20.0, n_frames=n_frames, seed=seed, fading="rayleigh_block")
    got = {meta["image_id"]: (meta, symbols) for meta, symbols in received}
    assert np.ptp(fade_db) > 10                          # the seed gives real fades to follow
    assert {i for i in range(n_frames) if fade_db[i] > -12} <= set(got)
    for i, (meta, symbols) in got.items():
        expected = 20.0 + fade_db[i]
        assert abs(meta["snr_est_db"] - expected) < 1.0, (i, meta["snr_est_db"], expected)
        mse = -10 * np.log10(np.mean(np.abs(symbols - sent[i]) ** 2))
        assert abs(mse - expected) < 1.0, (i, mse, expected)


def test_logistic_fit_recovers_the_loss_curve_it_was_drawn_from():
    snrs = np.arange(-7.0, 1.0)
    sent = np.full(snrs.size, 4000)
    lost = np.rint(sent / (1 + np.exp((snrs + 3.2) / 0.6))).astype(int)
    mid, width = fit_logistic_loss(snrs, lost, sent)
    assert abs(mid + 3.2) <= 0.02 and abs(width - 0.6) <= 0.02


def test_bench_frames_counts_every_frame_and_fits_the_loss(tmp_path):
    result = bench_frames((-9.0, -3.5, 8.0), n_frames=24, json_path=tmp_path / "f.json", plot_path=tmp_path / "f.png")
    assert json.loads((tmp_path / "f.json").read_text()) == result and (tmp_path / "f.png").stat().st_size > 0
    low, mid, high = result["points"]
    assert (low["decoded"], high["decoded"]) == (0, 24) and low["snr_est_db"] is None
    assert all(p["decoded"] + p["lost"] == 24 for p in result["points"])
    assert abs(high["payload_snr_db"] - 8.0) < 0.5 and abs(high["snr_eff_db"] - 8.0) < 0.5
    assert -6.0 < result["fit"]["loss_snr_db"] < 0.0
    assert result["controller"] == {"loss_snr_db": -3.5, "loss_width_db": 0.5}
    rate = result["receive_rate"]
    assert rate["correlators"] == 1 and rate["frame_samples"] > 24 * 512 and rate["noise_samples"] >= 1 << 21
    assert rate["frames_msps"] > 0 and rate["noise_msps"] > 0 and rate["demux_frames_msps"] > 0
    assert rate["frames_decoded"] == rate["demux_frames_decoded"] == 24      # both builds, every frame
    # stock gr-digital in the same run, on as many frames carrying the same payload, and decoding them
    stock = result["stock_ofdm_rx_rate"]
    assert stock["frames"] == 24 and stock["frames_decoded"] >= 22 and stock["payload_bytes"] == 128
    assert stock["frames_msps"] > 0
    assert result["receive_rate_vs_stock"] == round(rate["frames_msps"] / stock["frames_msps"], 3)


def test_the_last_frame_before_a_pause_reaches_the_receiver_without_a_flush():
    """A ZMQ stream stops while the transmitter waits for its encoder; the receiver's correlators
    work in blocks and hold a frame's tail until samples after it come. The transmitter sends zeros
    at the end of each burst by itself, so a paused link still delivers the frame before the pause
    (it used to come only with the next image, seconds later: the reassembly timeout split images)."""
    import time
    from gsc_blocks.pdu_util import make_pdu, split_pdu
    from gsc_blocks.ofdm_analog_tx import RELEASE_ZEROS
    tb = gr.top_block()
    tx, rx, store = ofdm_analog_tx(amplitude=0.1), ofdm_analog_rx(), blocks.message_debug()
    tb.connect(tx, gsc_channel(snr_db=20.0, amplitude=0.1, seed=2), rx)
    tb.msg_connect(rx, "out", store, "store")
    sent = gaussian_symbols(np.random.default_rng(4), 3072)
    tb.start()
    try:
        for burst in range(2):
            tx.builder.to_basic_block()._post(pmt.intern("in"), make_pdu(fragment_meta(burst, 3072), sent))
            deadline = time.time() + 20
            while store.num_messages() <= burst and time.time() < deadline:
                time.sleep(0.02)
            assert store.num_messages() == burst + 1, f"frame {burst} held at the receiver"
            # one burst of zeros per pause, not a stream of them
            expected = tx.builder.samples_queued + (burst + 1) * RELEASE_ZEROS
            while tx.flusher.nitems_written(0) < expected and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
            assert tx.flusher.nitems_written(0) == expected
    finally:
        tb.stop()
        tb.wait()
    meta, symbols = split_pdu(store.get_message(1))
    assert meta["image_id"] == 1 and 10 * np.log10(1 / np.mean(np.abs(symbols - sent) ** 2)) > 17


def _record_frames(snr_db, lengths, n_frames, cfo=0.0, taps=(1.0,), seed=3):
    """A recorded stream of n_frames back to back (payload lengths cycling through `lengths`)
    through gr-channels at snr_db."""
    tb = gr.top_block()
    tx = ofdm_analog_tx(amplitude=0.1)
    sink = blocks.vector_sink_c()
    tb.connect(tx, gsc_channel(snr_db=snr_db, cfo=cfo, taps=list(taps), amplitude=0.1, seed=seed), sink)
    rng = np.random.default_rng(seed)
    tb.start()
    try:
        send_and_collect(tx, blocks.message_debug(), [
            (fragment_meta(i, lengths[i % len(lengths)], slot=i, power_level=i % 3),
             gaussian_symbols(rng, lengths[i % len(lengths)])) for i in range(n_frames)], 0)
        while sink.nitems_read(0) < tx.builder.samples_queued:
            pass
    finally:
        tb.stop()
        tb.wait()
    return np.array(sink.data(), np.complex64)


def _receive(stream, batch_frames):
    tb = gr.top_block()
    rx = ofdm_analog_rx(batch_frames=batch_frames)
    store = blocks.message_debug()
    tb.connect(blocks.vector_source_c(stream, False), rx)
    tb.msg_connect(rx, "out", store, "store")
    tb.run()
    from gsc_blocks.pdu_util import split_pdu
    return [split_pdu(store.get_message(k)) for k in range(store.num_messages())], rx


def test_frames_handled_in_batches_give_what_the_demux_gives():
    """frame_receiver (all frames of a call together) against header_payload_demux and the
    per-frame handlers, on one recorded stream of mixed lengths, power levels, a CFO and
    multipath: the same frames, header fields and estimates, the same symbols."""
    stream = _record_frames(12.0, [512, 100, 4800, 48, 1000], 40, cfo=0.02, taps=MILD_3TAP)
    one_by_one, rx_demux = _receive(stream, False)
    batched, rx_batch = _receive(stream, True)
    assert [m["image_id"] for m, _ in batched] == [m["image_id"] for m, _ in one_by_one] == list(range(40))
    assert rx_batch.header_decoder.frames_ok == rx_demux.header_decoder.frames_ok == 40
    for (ma, sa), (mb, sb) in zip(one_by_one, batched):
        assert set(ma) == set(mb)
        for key in set(ma) - {"rx_time"}:
            assert ma[key] == pytest.approx(mb[key], abs=1e-4), key
        assert sa.size == sb.size == ma["payload_symbols"]
        assert np.max(np.abs(sa - sb)) < 1e-4 * np.max(np.abs(sa))


def test_batched_frames_count_failed_headers_and_find_the_rest():
    """Near the detection limit headers fail: each failure is counted once, and a frame is never
    delivered twice."""
    stream = _record_frames(-3.0, [512], 60, seed=5)
    received, rx = _receive(stream, True)
    ids = [m["image_id"] for m, _ in received]
    assert len(ids) == len(set(ids)) == rx.header_decoder.frames_ok
    assert 10 <= len(ids) < 60 and rx.header_decoder.frames_failed > 0
