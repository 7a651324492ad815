"""`gsc bench frames`: how surely the receiver finds and decodes frames as the SNR falls.

Frames of known complex Gaussian symbols go through the real one-process chain
ofdm_analog_tx -> gsc_channel (gr-channels) -> ofdm_analog_rx, set up from a radio
setup's ofdm and channel sections. Per SNR it counts the frames whose header
decoded, compares the SNR estimates and the payload's measured SNR with the
channel's, and fits the logistic loss curve the controller plans with
(core/controller.py CostModel.loss_probability: one half at loss_snr_db,
loss_width_db per e-fold)."""
import time
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr

from ..channel import from_config as channel_from_config
from ..ofdm_analog_rx import ofdm_analog_rx
from ..ofdm_analog_tx import ofdm_analog_tx
from ..pdu_util import make_pdu, split_pdu
from .common import load_setup, provenance, write_json


def gaussian_symbols(rng, n):
    """n unit-power circular complex Gaussian symbols, like a JSCC encoder's output."""
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)


def fragment_meta(image_id, n_symbols, **extra):
    """Header fields of a one-fragment 32x32 image of n_symbols payload symbols."""
    meta = dict(image_id=image_id, fragment_index=0, fragment_count=1, codec_id=1, rate_index=0, power_level=0,
                refine_steps=0, payload_symbols=n_symbols, height=32, width=32)
    meta.update(extra)
    return meta


def send_and_collect(tx, store, fragments, expect, timeout=20.0, idle_s=None, rx=None, tail_zeros=8192):
    """Post (meta, symbols) fragments to a running TX, flush the tail, and wait for `expect`
    RX messages, or until the deadline. idle_s: also stop once no message came for idle_s and
    the receiver rx (the ofdm_analog_rx, when given) has read every frame's samples (for runs
    where frames are expected to be lost)."""
    for meta, symbols in fragments:
        tx.builder.to_basic_block()._post(pmt.intern("in"), make_pdu(meta, symbols))
    deadline = time.time() + timeout
    while tx.builder.frames_built < len(fragments) and time.time() < deadline:
        time.sleep(0.01)
    tx.flusher.to_basic_block()._post(pmt.intern("flush"),
                                      pmt.to_pmt({"after": tx.builder.samples_queued, "zeros": tail_zeros}))
    count, changed = store.num_messages(), time.time()
    while count < expect and time.time() < deadline:
        time.sleep(0.02)
        if store.num_messages() != count:
            count, changed = store.num_messages(), time.time()
        elif idle_s is not None and time.time() - changed > idle_s and \
                (rx is None or rx.join.nitems_read(0) >= tx.builder.samples_queued + tail_zeros // 2):
            break
    return [split_pdu(store.get_message(k)) for k in range(store.num_messages())]


def _tx(ofdm=None):
    """ofdm_analog_tx from a setup's ofdm section (None: the blocks' defaults, amplitude 0.1)."""
    ofdm = ofdm or {}
    return ofdm_analog_tx(**{"amplitude": 0.1, **{k: ofdm[k] for k in (
        "fft_len", "cp_len", "amplitude", "guard_symbols", "max_fragment_symbols") if k in ofdm}})


def _rx(ofdm=None, batch_frames=True):
    ofdm = ofdm or {}
    return ofdm_analog_rx(batch_frames=batch_frames, **{k: ofdm[k] for k in (
        "fft_len", "cp_len", "detect_threshold", "max_fragment_symbols", "cfo_search") if k in ofdm})


RATE_REPEATS = 3     # each rate is the median of this many runs over the same recorded stream


def timed_run(make_top, samples, repeats=RATE_REPEATS):
    """Median samples per second (MS/s) of `repeats` fresh top blocks run to the end of a recorded
    stream of `samples` samples, and the last top block."""
    rates = []
    for _ in range(repeats):
        tb = make_top()
        start = time.perf_counter()
        tb.run()
        rates.append(samples / (time.perf_counter() - start) / 1e6)
    return round(float(np.median(rates)), 3), tb


def receive_rate(cfg, n_frames, n_symbols, snr_db, seed=1):
    """Samples per second the setup's receiver takes in, run flat out on recorded streams: n_frames
    back to back through the setup's channel at snr_db (bound by the per-frame work), by this
    receiver and by its one-frame-at-a-time build (header_payload_demux), and complex noise of
    the same power (bound by the detection branch)."""
    cfg["channel"].update(snr_db=float(snr_db), snr_trace="")
    tb = gr.top_block()
    tx, sink = _tx(cfg["ofdm"]), blocks.vector_sink_c()
    tb.connect(tx, channel_from_config(cfg), sink)
    rng = np.random.default_rng(seed)
    tb.start()
    try:
        send_and_collect(tx, blocks.message_debug(), [(fragment_meta(i, n_symbols, slot=i), gaussian_symbols(
            rng, n_symbols)) for i in range(n_frames)], 0)
        deadline = time.time() + 60.0
        while sink.nitems_read(0) < tx.builder.samples_queued and time.time() < deadline:
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
    frames = np.array(sink.data(), dtype=np.complex64)
    # at least 2 M samples of noise, so the flowgraph's start does not weigh in
    noise = (gaussian_symbols(rng, max(frames.size, 1 << 21)) * np.sqrt(np.mean(np.abs(frames) ** 2))
             ).astype(np.complex64)
    rates, found = {}, {}
    for name, stream, batch in (("frames", frames, True), ("demux_frames", frames, False), ("noise", noise, True)):
        def top():
            tb = gr.top_block()
            tb.rx = _rx(cfg["ofdm"], batch)
            tb.connect(blocks.vector_source_c(stream, False), tb.rx)
            return tb
        rates[f"{name}_msps"], tb = timed_run(top, stream.size)
        found[name] = tb.rx.header_decoder.frames_ok
    return {**rates, "correlators": len(tb.rx.cfo_offsets), "frame_samples": int(frames.size),
            "noise_samples": int(noise.size), "frames": n_frames, "frames_decoded": found["frames"],
            "demux_frames_decoded": found["demux_frames"]}


STOCK_TAG = "packet_len"
# Both receivers' rates are timed on frames at this SNR: gr-digital's uncoded QPSK with its
# decision-feedback equalizer decodes next to none of its frames below about 18 dB (37 of 100
# at 18 dB, 95 at 20, 98 at 25 here), and a receiver that drops its frames does less work.
RATE_SNR_DB = 25.0


def stock_ofdm_rx_rate(cfg, n_frames, n_symbols, snr_db, seed=1):
    """The same measurement on stock GNU Radio: gr-digital's ofdm_tx -> the setup's channel ->
    a recorded stream; then gr-digital's ofdm_rx alone, run flat out on it. Same FFT size, cyclic
    prefix, carriers and sync words (gr-digital's defaults, which this module's numerology keeps);
    QPSK payloads of the bits n_symbols carriers carry (n_symbols / 4 bytes), BPSK headers."""
    from gnuradio import digital
    fft_len, cp_len = cfg["ofdm"]["fft_len"], cfg["ofdm"]["cp_len"]
    cfg["channel"].update(snr_db=float(snr_db), snr_trace="")
    payload = max(1, n_symbols // 4)
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, payload * n_frames, dtype=np.uint8)
    tags = [gr.tag_utils.python_to_tag((i * payload, pmt.intern(STOCK_TAG), pmt.from_long(payload)))
            for i in range(n_frames)]
    tb = gr.top_block()
    raw = blocks.vector_sink_c()
    tb.connect(blocks.vector_source_b(data.tolist(), False, 1, tags),
               digital.ofdm_tx(fft_len, cp_len, STOCK_TAG, bps_header=1, bps_payload=2, rolloff=0), raw)
    tb.run()
    frames = np.array(raw.data(), np.complex64)
    # Scaled to the setup's RMS amplitude, as this module's transmitter sends, so the channel's SNR means
    # the same for both (gr-digital's IFFT is not normalized).
    frames *= np.float32(cfg["ofdm"]["amplitude"] / np.sqrt(np.mean(np.abs(frames[np.abs(frames) > 0]) ** 2)))
    tb = gr.top_block()
    sink = blocks.vector_sink_c()
    tb.connect(blocks.vector_source_c(np.concatenate([frames, np.zeros(8 * (fft_len + cp_len), np.complex64)]),
                                      False), channel_from_config(cfg), sink)
    tb.run()
    stream = np.array(sink.data(), np.complex64)

    def top():
        tb = gr.top_block()
        rx = digital.ofdm_rx(fft_len, cp_len, "frame_len", STOCK_TAG, "packet_num", bps_header=1, bps_payload=2)
        tb.out = blocks.vector_sink_b()
        tb.connect(blocks.vector_source_c(stream, False), rx, tb.out)
        return tb
    rate, tb = timed_run(top, stream.size)
    decoded = len([t for t in tb.out.tags() if pmt.symbol_to_string(t.key) == STOCK_TAG])
    return {"frames_msps": rate, "frame_samples": int(stream.size),
            "frames": n_frames, "frames_decoded": decoded, "payload_bytes": payload}


def known_symbol_link(channel, n_frames=12, n_symbols=512, seed=1, power_level=0, payload_power=1.0,
                      ofdm=None, timeout=20.0, idle_s=None):
    """Send n_frames of known symbols (unit power unless payload_power says otherwise), frame i
    in image slot i, through `channel` (a gsc_channel) in one flowgraph.
    ofdm: the setup's ofdm section (default: the blocks' defaults).
    Returns (sent symbols, received (meta, symbols) list, the ofdm_analog_rx block)."""
    tb = gr.top_block()
    tx, rx = _tx(ofdm), _rx(ofdm)
    store = blocks.message_debug()
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", store, "store")
    rng = np.random.default_rng(seed)
    sent = [gaussian_symbols(rng, n_symbols) * np.float32(np.sqrt(payload_power)) for _ in range(n_frames)]
    tb.start()
    try:
        received = send_and_collect(tx, store, [(fragment_meta(i, n_symbols, power_level=power_level, slot=i), s)
                                                for i, s in enumerate(sent)], n_frames, timeout, idle_s, rx)
    finally:
        tb.stop()
        tb.wait()
    return sent, received, rx


def fit_logistic_loss(snrs, lost, sent):
    """Maximum-likelihood fit of P(lost | snr) = 1 / (1 + exp((snr - mid) / width)) to the
    counts; returns (mid_db, width_db). A grid search: two parameters, a few points."""
    snrs, lost, sent = (np.asarray(a, dtype=float) for a in (snrs, lost, sent))
    mids = np.arange(snrs.min() - 3.0, snrs.max() + 3.0, 0.01)[:, None, None]
    widths = np.arange(0.05, 3.0, 0.01)[None, :, None]
    z = np.clip((snrs[None, None, :] - mids) / widths, -60, 60)
    log_p = -np.log1p(np.exp(z))              # log P(lost)
    log_q = z - np.log1p(np.exp(z))           # log P(decoded)
    likelihood = (lost * log_p + (sent - lost) * log_q).sum(axis=2)
    i, j = np.unravel_index(np.argmax(likelihood), likelihood.shape)
    return float(mids[i, 0, 0]), float(widths[0, j, 0])


def bench_frames(snrs=(-6, -5, -4, -3, -2, -1, 0, 2), n_frames=200, n_symbols=512,
                 config="radio_config/zmq_loopback.yaml", overrides=(), json_path=None, plot_path=None, command=None):
    """Frame loss, SNR estimates and payload SNR per channel SNR (per carrier, full power) over the
    setup's channel (its cfo, multipath and fading; its snr_trace is ignored), the logistic fit,
    and the receiver's rate on recorded streams (receive_rate)."""
    from ..core.config import load_config
    cfg = load_config(config, list(overrides))
    if n_frames < 1 or not 1 <= n_symbols <= cfg["ofdm"]["max_fragment_symbols"]:
        raise ValueError(f"bench frames: --frames {n_frames} and --symbols {n_symbols}: need at least one frame "
                         f"and 1..{cfg['ofdm']['max_fragment_symbols']} symbols (ofdm.max_fragment_symbols)")
    points = []
    for k, snr in enumerate(snrs):
        cfg["channel"].update(snr_db=float(snr), snr_trace="", seed=cfg["channel"]["seed"] + k)
        sent, received, rx = known_symbol_link(channel_from_config(cfg), n_frames, n_symbols, seed=1 + k,
                                               ofdm=cfg["ofdm"], timeout=60.0 + 0.2 * n_frames, idle_s=1.0)
        decoded = len({meta["image_id"] for meta, _ in received})
        errors = [np.mean(np.abs(symbols - sent[meta["image_id"]]) ** 2) for meta, symbols in received]
        points.append({
            "snr_db": float(snr), "frames": n_frames, "decoded": decoded, "lost": n_frames - decoded,
            "loss_rate": (n_frames - decoded) / n_frames,
            "headers_failed": int(rx.header_decoder.frames_failed),
            "snr_est_db": float(np.mean([m["snr_est_db"] for m, _ in received])) if received else None,
            "snr_eff_db": float(np.mean([m["snr_eff_db"] for m, _ in received])) if received else None,
            "payload_snr_db": float(-10 * np.log10(np.mean(errors))) if errors else None})
        print(f"{snr:6.1f} dB: {points[-1]['decoded']}/{n_frames} frames decoded", flush=True)
    rate = receive_rate(cfg, n_frames, n_symbols, RATE_SNR_DB)
    stock = stock_ofdm_rx_rate(cfg, n_frames, n_symbols, RATE_SNR_DB)
    mid, width = fit_logistic_loss([p["snr_db"] for p in points], [p["lost"] for p in points],
                                   [p["frames"] for p in points])
    setup = load_setup(config, overrides)
    result = {"provenance": provenance(command, setup),
              "setup": str(config), "overrides": list(overrides), "n_symbols": n_symbols,
              "channel": {k: setup["channel"][k] for k in ("cfo", "fading", "multipath_taps")},
              "points": points,
              "fit": {"loss_snr_db": round(mid, 2), "loss_width_db": round(width, 2)},
              "controller": {k: cfg["controller"][k] for k in ("loss_snr_db", "loss_width_db")},
              "receive_rate": {**rate, "definition": "samples per second the receiver alone takes in from a "
                               f"recorded stream: {n_frames} frames back to back at {RATE_SNR_DB:g} dB (frames_msps; "
                               "demux_frames_msps: the same receiver handling one frame at a time through "
                               "header_payload_demux, batch_frames=False), and noise of the same power; wall time "
                               f"on this host, median of {RATE_REPEATS} runs"},
              "stock_ofdm_rx_rate": {**stock, "definition": "samples per second gr-digital's ofdm_rx takes in from "
                                     f"a recorded stream of {n_frames} ofdm_tx frames (QPSK) back to back through "
                                     f"the same channel at {RATE_SNR_DB:g} dB, timed in the same run (median of "
                                     f"{RATE_REPEATS})"},
              "receive_rate_vs_stock": round(rate["frames_msps"] / stock["frames_msps"], 3),
              "demux_rate_vs_stock": round(rate["demux_frames_msps"] / stock["frames_msps"], 3)}
    if json_path:
        write_json(json_path, result)
    if plot_path:
        plot_frames(result, plot_path)
    return result


def plot_frames(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = result["points"]
    snr = np.array([p["snr_db"] for p in pts])
    grid = np.linspace(snr.min() - 1, snr.max() + 1, 200)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(snr, [p["loss_rate"] for p in pts], "o", label=f"measured ({pts[0]['frames']} frames per point)")
    for key, style in (("fit", "-"), ("controller", "--")):
        m, w = result[key]["loss_snr_db"], result[key]["loss_width_db"]
        a.plot(grid, 1 / (1 + np.exp(np.clip((grid - m) / w, -60, 60))), style,
               label=f"{key}: half at {m:.2f} dB, {w:.2f} dB per e-fold")
    a.set_xlabel("channel SNR per carrier (dB)")
    a.set_ylabel("frames lost")
    a.set_title("frame loss (preamble missed or header CRC failed)")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    for key, label in (("snr_est_db", "preamble SNR estimate"), ("snr_eff_db", "effective SNR (equalized)"),
                       ("payload_snr_db", "payload SNR measured on known symbols")):
        xs = [p["snr_db"] for p in pts if p[key] is not None]
        b.plot(xs, [p[key] - p["snr_db"] for p in pts if p[key] is not None], "o-", label=label)
    b.axhline(0, color="k", lw=0.5)
    b.set_xlabel("channel SNR per carrier (dB)")
    b.set_ylabel("minus the channel's SNR (dB)")
    b.set_title("receiver's SNR on the decoded frames")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
