"""MU-GSC's transmitting side over the loopback, and per-user results of a run's folder.

    scripts/gsc rx --config radio_config/zmq_multiuser.yaml --out OUT
    scripts/gsc tx --config radio_config/zmq_multiuser.yaml --images DIR --out OUT

With multiuser.users = N > 1 the transmitter process holds N transmitters (user
ids 0..N-1, a session each, every one sending the image list) and the air: each
user's samples go through its own gr-channels model at its own SNR
(multiuser.snr_db), are interpolated to N x multiuser.user_rate (gr-filter) and
moved to sub-band k (a rotator), and the users are summed into one stream,
throttled to that rate (the loopback has no radio clock). The receiver
(apps/flowgraphs.py rx_top) splits the stream with gr-filter's polyphase
channelizer into N per-user OFDM receivers sharing one decoder and its decode
service.

Over USRPs each transmitter is a radio of its own: scripts/gsc tx with
multiuser.users 1 and --user k, tuned to its sub-band (subband.subband_offset_hz).
"""
import json
import time
from pathlib import Path

import numpy as np
from gnuradio import blocks, filter as grfilter, gr, zeromq

from ..channel import from_config as channel_from_config
from ..subband import air_taps
from .flowgraphs import ZMQ_HWM, ZMQ_TIMEOUT_MS, event_log, user_tx


def user_snrs(config) -> list[float]:
    users = config["multiuser"]
    return list(users["snr_db"]) or [config["channel"]["snr_db"]] * users["users"]


class mu_tx_top(gr.top_block):
    """N user transmitters -> per-user gr-channels -> interpolation to sub-band k -> sum -> throttle -> ZMQ PUSH."""

    def __init__(self, config, images, manifest, start_delay_s=0.5, interval_s=0.0, first_id=0, events_path=""):
        gr.top_block.__init__(self, "gsc_mu_tx")
        if config["link"] != "zmq":
            raise ValueError("multiuser.users > 1 emulates the air over ZMQ; over USRPs run one transmitter "
                             "per radio, each tuned to its sub-band (see apps/multiuser.py)")
        n = config["multiuser"]["users"]
        self.events = event_log(events_path)
        self.users = [user_tx(self, config, images, manifest, start_delay_s, interval_s, first_id, user=k,
                              continuous=True) for k in range(n)]
        # The air: user k interpolated to the wideband rate and moved to sub-band k (the
        # channelizer's channel k, at k/n of the wideband rate), then the users summed.
        self.interpolators, self.channels = [], []
        self.adder = blocks.add_cc()
        for k, (user, snr) in enumerate(zip(self.users, user_snrs(config))):
            channel = channel_from_config(config, snr_db=snr, seed_offset=k)
            interpolator = grfilter.interp_fir_filter_ccf(n, air_taps(n))
            self.channels.append(channel)
            self.interpolators.append(interpolator)
            self.connect(user.tx, channel, interpolator, blocks.rotator_cc(2 * np.pi * k / n), (self.adder, k))
        self.throttle = blocks.throttle(gr.sizeof_gr_complex, n * config["multiuser"]["user_rate"])
        self.radio_sink = zeromq.push_sink(gr.sizeof_gr_complex, 1, config["zmq"]["address"], ZMQ_TIMEOUT_MS,
                                           False, ZMQ_HWM)
        self.connect(self.adder, self.throttle, self.radio_sink)

    def all_framed(self) -> bool:
        return all(u.all_framed() and u.encoder.end_of_stream_sent for u in self.users)

    def frames_out(self) -> bool:
        """Every user's frames have left its transmitter and entered the air."""
        return all(u.tx.flusher.passed >= u.builder.samples_queued
                   and self.interpolators[k].nitems_read(0) >= u.tx.flusher.frames_end
                   for k, u in enumerate(self.users))

    def event_list(self):
        return self.events.event_list()


def per_user(out_dir) -> dict:
    """{"users": {user: {"decoded", "lost", "latency_ms" [..], "psnr_db" [..]}}, "unaccounted", "report"}
    from a run's folder: every image of the manifest, decoded or lost with its reason (core/report.py)."""
    from ..core.report import account, reconcile
    users = {}
    for row in account(out_dir):
        entry = users.setdefault(row["user"], {"decoded": 0, "lost": 0, "latency_ms": [], "psnr_db": []})
        entry[row["status"]] += 1
        if row["status"] == "decoded":
            if row.get("latency_ms") is not None:
                entry["latency_ms"].append(float(row["latency_ms"]))
            if row.get("psnr_db") is not None:
                entry["psnr_db"].append(float(row["psnr_db"]))
    report = reconcile(out_dir)
    return {"users": users, "unaccounted": int(report["unaccounted"]), "report": report}


def latency_summary(values) -> dict:
    values = np.asarray(values, float)
    if not values.size:
        return {"latency_ms_p50": float("nan"), "latency_ms_p99": float("nan")}
    return {"latency_ms_p50": float(np.percentile(values, 50)), "latency_ms_p99": float(np.percentile(values, 99))}
