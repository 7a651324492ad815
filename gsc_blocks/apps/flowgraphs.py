"""TX and RX top blocks from a validated radio setup (see core/config.py)."""
import json
import threading
from pathlib import Path

import numpy as np
import pmt
from gnuradio import filter as grfilter, gr, zeromq

from ..channel import from_config as channel_from_config
from ..core.config import RadioError
from ..image_sink import image_sink
from ..image_source import image_source
from ..lyapunov_controller import lyapunov_controller
from ..ofdm_analog_rx import frame_receiver, ofdm_analog_rx
from ..ofdm_analog_tx import ofdm_analog_tx
from ..semantic_decoder import semantic_decoder
from ..semantic_encoder import semantic_encoder
from ..subband import subband_taps

ZMQ_TIMEOUT_MS = 100
# A small high-water mark gives backpressure: the TX runs only as far ahead of
# the RX as a few messages, so nothing waits in ZMQ queues when the TX ends.
ZMQ_HWM = 4


def _usrp(config, direction):
    from gnuradio import uhd
    u = config["usrp"]
    stream = uhd.stream_args(cpu_format="fc32", channels=[0])
    where = config.get("_path", "the setup")
    try:
        if direction == "tx":
            dev = uhd.usrp_sink(u["args"], stream, "packet_len")
        else:
            dev = uhd.usrp_source(u["args"], stream)
    except RuntimeError as err:
        found = "no USRP found" if "No devices found" in str(err) else f"the USRP did not open ({str(err).strip()})"
        raise RadioError(
            f"{found} for usrp.args {u['args']!r} ({where}): check that it is attached and powered, list what "
            "UHD sees with `uhd_find_devices` (then `uhd_usrp_probe --args ...`), and set usrp.args to match "
            "(e.g. serial=...); over the network, the host needs an address on the radio's subnet") from None
    try:
        if direction == "tx":
            dev.set_gain(u["tx_gain"], 0)
            dev.set_antenna(u["tx_antenna"], 0)
        else:
            dev.set_gain(u["rx_gain"], 0)
            dev.set_antenna(u["rx_antenna"], 0)
        dev.set_samp_rate(u["samp_rate"])
        dev.set_center_freq(u["center_freq"], 0)
    except RuntimeError as err:
        raise RadioError(f"the USRP ({u['args']!r}, {where}) refused a setting: {str(err).strip()}; see "
                         "`uhd_usrp_probe` for its antennas, gain and frequency ranges") from None
    return dev


def calibration_path(config) -> str:
    """controller.calibration, or the codec's models/<name>/calibration.json when it is ''."""
    from ..core.models import find_model
    if config["controller"]["calibration"]:
        return config["controller"]["calibration"]
    codec = config["codec"]
    return str(find_model(codec["name"], codec["models_dir"] or None) / "calibration.json")


def check_calibration_cbr(config):
    """A table measured at one CBR (a digital codec's, `bench calibrate --cbr`) prices the
    airtime and quality of that CBR only: refuse a setup whose codec.digital_cbr differs."""
    import json
    from fractions import Fraction
    path = calibration_path(config)
    try:
        measured = json.loads(Path(path).read_text()).get("cbr")
    except (OSError, ValueError):
        return                                   # CalibrationTable.load names a missing or broken table
    setup = config["codec"]["digital_cbr"]
    if measured and Fraction(str(measured)).limit_denominator(1000) != Fraction(setup).limit_denominator(1000):
        raise ValueError(f"{path} was measured at CBR {measured}, but codec.digital_cbr is {setup:.6g}: set "
                         f"codec.digital_cbr to {float(Fraction(str(measured))):.6g} ({measured}), or calibrate at "
                         f"this CBR with `scripts/gsc bench calibrate --codec {config['codec']['name']} --cbr ...`")


class uhd_event_counter(gr.basic_block):
    """Counts a USRP sink's asynchronous events (its 'async_msgs' port: a dict whose event_code
    is underflow, underflow_in_packet, seq_error, seq_error_in_burst, time_error or burst_ack):
    underflows (the host did not feed the radio in time) and other errors."""

    UNDERFLOWS = ("underflow", "underflow_in_packet")
    ERRORS = ("seq_error", "seq_error_in_burst", "time_error")

    def __init__(self):
        gr.basic_block.__init__(self, name="gsc_uhd_event_counter", in_sig=None, out_sig=None)
        self.underflows = self.errors = 0
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def handle(self, msg):
        code = self._event_code(pmt.to_python(msg))
        if code in self.UNDERFLOWS:
            self.underflows += 1
        elif code in self.ERRORS:
            self.errors += 1

    @classmethod
    def _event_code(cls, value):
        """The event_code anywhere in the message (a dict, or a pair of a key and a dict)."""
        if isinstance(value, dict):
            if "event_code" in value:
                return str(value["event_code"])
            value = list(value.values())
        if isinstance(value, (list, tuple)):
            for item in value:
                code = cls._event_code(item)
                if code is not None:
                    return code
        return None


class rx_time_counter(gr.sync_block):
    """Counts rx_time tags on a stream (a second reader of the USRP source's buffer: no copy).
    The USRP source tags its first sample, and the first sample after every overflow."""

    def __init__(self):
        gr.sync_block.__init__(self, name="gsc_rx_time_counter", in_sig=[np.complex64], out_sig=None)
        self.key = pmt.intern("rx_time")
        self.tags = 0

    def work(self, input_items, output_items):
        n = len(input_items[0])
        start = self.nitems_read(0)
        self.tags += len(self.get_tags_in_range(0, start, start + n, self.key))
        return n

    @property
    def overflows(self) -> int:
        return max(0, self.tags - 1)


MAX_IMAGES_AHEAD = 32              # images handed to the encoder and not yet encoded
MAX_SAMPLES_AHEAD = 1 << 19        # samples framed and not yet taken by the radio (4 MiB; their frame
                                   # symbols, 3/5 as many, fit ofdm_analog_tx's FRAME_QUEUE_SYMBOLS)
MAX_IMAGES_BEHIND = 64             # images received and not yet decoded and written


class event_log(gr.basic_block):
    """Message sink for the blocks' 'events' (dicts): keeps them in order and, given a path,
    appends each to that JSONL file as it comes, so a process that is killed leaves its events
    behind. Python-side and locked: safe to read while the flowgraph runs."""

    def __init__(self, path=""):
        gr.basic_block.__init__(self, name="gsc_event_log", in_sig=None, out_sig=None)
        self.path = Path(path) if path else None
        self.events = []
        self.lock = threading.Lock()
        self.message_port_register_in(pmt.intern("store"))
        self.set_msg_handler(pmt.intern("store"), self.handle)

    def handle(self, msg):
        event = pmt.to_python(msg)
        with self.lock:
            self.events.append(event)
            if self.path is not None:
                with self.path.open("a") as fh:
                    fh.write(json.dumps(event, default=str) + "\n")

    def event_list(self) -> list:
        with self.lock:
            return list(self.events)


class user_tx:
    """One user's transmitter in a top block: image_source -> semantic_encoder -> ofdm_analog_tx,
    and, in a closed loop, its controller (reports from the receiver's PUB, its own session's only).

    continuous: the transmitter sends zeros whenever it has no frame (a multi-user air sums
    the users' streams, so none may stop)."""

    def __init__(self, top, config, images, manifest, start_delay_s=0.5, interval_s=0.0, first_id=0,
                 user=0, continuous=False):
        ofdm, codec, ctrl = config["ofdm"], config["codec"], config["controller"]
        self.source = image_source(images, first_id=first_id, interval_s=interval_s, manifest=manifest,
                                   start_delay_s=start_delay_s, paced=ctrl["enabled"], user=user)
        self.encoder = semantic_encoder(codec["name"], codec["rate_index"], codec["power_level"],
                                        codec["refine_steps"],
                                        codec["encoder_snr_db"], ofdm["max_fragment_symbols"], codec["models_dir"],
                                        ",".join(codec["classes"]), codec["digital_cbr"], codec["class_quality"],
                                        codec["class_masks"])
        self.tx = ofdm_analog_tx(ofdm["fft_len"], ofdm["cp_len"], amplitude=ofdm["amplitude"],
                                 guard_symbols=ofdm["guard_symbols"],
                                 max_fragment_symbols=ofdm["max_fragment_symbols"],
                                 idle_zeros=4096 if ctrl["enabled"] and not continuous else 0)
        if continuous:
            self.tx.flusher.continuous = True
        # Backpressure: the source waits while images wait for the encoder, or framed samples
        # for the radio, beyond a bound, so a long batch never piles up in memory.
        self.source.hold = lambda: (self.source.sent - self.encoder.images_handled > MAX_IMAGES_AHEAD
                                    or self.tx.builder.samples_queued - self.tx.flusher.passed > MAX_SAMPLES_AHEAD)
        top.msg_connect(self.source, "out", self.encoder, "in")
        top.msg_connect(self.encoder, "out", self.tx, "in")
        top.msg_connect(self.encoder, "events", top.events, "store")
        self.controller = None
        if ctrl["enabled"]:
            check_calibration_cbr(config)
            self.controller = lyapunov_controller(
                calibration_path(config), ctrl["V"], ctrl["delay_target_ms"], ctrl["quality_target"],
                ctrl["power_levels"], ctrl["policy"], ctrl["fixed_power_level"], config["channel"]["snr_db"],
                ctrl["loss_snr_db"], ctrl["lost_quality"], ctrl["slot_timeout_s"] * 1e3,
                ctrl["fixed_rate_index"], ctrl["quality_metric"], ctrl["fixed_refine_steps"], ctrl["refine_steps"],
                loss_width_db=ctrl["loss_width_db"], loss_target=ctrl["loss_target"])
            self.encoder.handle_control(pmt.to_pmt(self.controller.initial_command()))
            self.reports = zeromq.sub_msg_source(ctrl["report_address"], ZMQ_TIMEOUT_MS, False)
            top.msg_connect(self.reports, "out", self.controller, "report")
            top.msg_connect(self.controller, "command", self.encoder, "control")
            top.msg_connect(self.controller, "next", self.source, "next")
            top.msg_connect(self.source, "out", self.controller, "sent")

    @property
    def builder(self):
        return self.tx.builder

    def all_framed(self) -> bool:
        sent = self.source.sent
        return (self.source.finished.is_set() and self.encoder.images_handled >= sent
                and self.builder.frames_built >= self.encoder.fragments_out)


class tx_top(gr.top_block):
    """image_source -> semantic_encoder -> ofdm_analog_tx -> [channel] -> ZMQ PUSH | USRP sink."""

    def __init__(self, config, images, manifest, start_delay_s=0.5, interval_s=0.0, first_id=0, events_path="",
                 user=0):
        gr.top_block.__init__(self, "gsc_tx")
        self.events = event_log(events_path)
        self.user = user_tx(self, config, images, manifest, start_delay_s, interval_s, first_id, user=user)
        self.source, self.encoder, self.tx = self.user.source, self.user.encoder, self.user.tx
        self.controller = self.user.controller
        chain = [self.tx]
        if config["link"] == "zmq":
            if config["channel"]["enabled"]:
                self.channel = channel_from_config(config)
                chain.append(self.channel)
            chain.append(zeromq.push_sink(gr.sizeof_gr_complex, 1, config["zmq"]["address"], ZMQ_TIMEOUT_MS,
                                          False, ZMQ_HWM))
        else:
            chain.append(_usrp(config, "tx"))
            self.uhd_events = uhd_event_counter()
            self.msg_connect(chain[-1], "async_msgs", self.uhd_events, "in")
        self.radio_sink = chain[-1]
        self.connect(*chain)

    def uhd_counts(self) -> dict:
        """Underflows and other UHD errors the USRP sink reported; {} over ZMQ."""
        events = getattr(self, "uhd_events", None)
        return {} if events is None else {"uhd_underflows": events.underflows, "uhd_errors": events.errors}

    def event_list(self):
        return self.events.event_list()

    @property
    def builder(self):
        return self.tx.builder

    def all_framed(self) -> bool:
        return self.user.all_framed()

    def flush(self, zeros: int):
        """Zeros after the last frame (see apps/run.py for how many)."""
        self.tx.flusher.request(int(self.builder.samples_queued), int(zeros))


def rx_decoder(config, streams: int = 1) -> semantic_decoder:
    """The receiver's semantic decoder and its decode service, as the setup says; it ends
    after `streams` transmitters' end-of-stream frames."""
    service = config["decode_service"]
    return semantic_decoder(config["codec"]["models_dir"], config["rx"]["reassembly_timeout_s"],
                            config["rx"]["refine_steps"], config["codec"]["digital_cbr"], service["mode"],
                            service["batch_size"], service["max_wait_ms"], service["backend"], streams,
                            service["record"], service["workers"])


class _HeaderTotals:
    """The per-user receivers' header counts, summed (what a runner reads of one receiver)."""

    def __init__(self, receivers):
        self.receivers = receivers

    @property
    def frames_ok(self) -> int:
        return sum(r.header_decoder.frames_ok for r in self.receivers)

    @property
    def frames_failed(self) -> int:
        return sum(r.header_decoder.frames_failed for r in self.receivers)


class _Receivers:
    def __init__(self, receivers):
        self.header_decoder = _HeaderTotals(receivers)


class rx_top(gr.top_block):
    """ZMQ PULL | USRP source -> ofdm_analog_rx -> semantic_decoder -> image_sink.

    With multiuser.users = N > 1 (MU-GSC, docs/multiuser.md): the source's stream ->
    gr-filter's polyphase channelizer -> one ofdm_analog_rx per user's sub-band, all handing
    their fragments to the one semantic_decoder, whose decode service they share."""

    def __init__(self, config, out_dir, manifest="", events_path=""):
        gr.top_block.__init__(self, "gsc_rx")
        ofdm = config["ofdm"]
        if config["link"] == "zmq":
            self.radio = zeromq.pull_source(gr.sizeof_gr_complex, 1, config["zmq"]["address"], ZMQ_TIMEOUT_MS,
                                            False, ZMQ_HWM)
        else:
            self.radio = _usrp(config, "rx")
            self.rx_time_tags = rx_time_counter()
            self.connect(self.radio, self.rx_time_tags)
        users = config["multiuser"]["users"]
        self.receivers = [ofdm_analog_rx(ofdm["fft_len"], ofdm["cp_len"], detect_threshold=ofdm["detect_threshold"],
                                         max_fragment_symbols=ofdm["max_fragment_symbols"],
                                         cfo_search=ofdm["cfo_search"]) for _ in range(users)]
        self.decoder = rx_decoder(config, streams=users)
        ctrl = config["controller"]
        self.sink = image_sink(out_dir, manifest,
                               classify=ctrl["enabled"] and ctrl["quality_metric"] == "accuracy_pct")
        self.events = event_log(events_path)
        if users == 1:
            self.rx = self.receivers[0]
            self.connect(self.radio, self.rx)
        else:
            self.rx = _Receivers(self.receivers)
            self.channelizer = grfilter.pfb.channelizer_ccf(users, subband_taps(users), 1.0)
            self.connect(self.radio, self.channelizer)
            for k, receiver in enumerate(self.receivers):
                self.connect((self.channelizer, k), receiver)
        for receiver in self.receivers:
            self.msg_connect(receiver, "out", self.decoder, "in")
            self.msg_connect(receiver, "events", self.events, "store")
        self.msg_connect(self.decoder, "out", self.sink, "in")
        self.msg_connect(self.decoder, "events", self.events, "store")
        # Backpressure: the receivers take no samples while more than MAX_IMAGES_BEHIND images wait
        # to be decoded or written, so a receiver that cannot keep up holds a bounded backlog.
        backlog = lambda: (self.decoder.images_submitted - self.decoder.images_failed - self.sink.count
                           - self.sink.write_failures > MAX_IMAGES_BEHIND)
        for receiver in self.receivers:
            if isinstance(receiver.header_decoder, frame_receiver):
                receiver.header_decoder.hold = backlog
        if config["controller"]["enabled"]:
            self.reports = zeromq.pub_msg_sink(config["controller"]["report_address"], ZMQ_TIMEOUT_MS, True)
            self.msg_connect(self.sink, "report", self.reports, "in")
            self.msg_connect(self.decoder, "report", self.reports, "in")     # images that failed to decode

    def event_list(self):
        return self.events.event_list()

    def uhd_counts(self) -> dict:
        """Overflows of the USRP source (rx_time tags after the first); {} over ZMQ."""
        tags = getattr(self, "rx_time_tags", None)
        return {} if tags is None else {"uhd_overflows": tags.overflows}

    @property
    def fragments_received(self) -> int:
        return self.rx.header_decoder.frames_ok
