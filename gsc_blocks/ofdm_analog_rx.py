"""Analog OFDM receiver: baseband samples in, equalized fragment PDUs out."""
import time

import numpy as np
import pmt
from gnuradio import blocks, digital, gr, pdu

from .core.frame import HEADER_OFDM_SYMBOLS, HeaderCodec, HeaderError, Numerology, power_gain
from .core.ofdm_analog import (ChannelEstimate, decision_directed_refinement, equalize, estimate_cfo,
                                estimate_channel,
                                header_soft_bits, preamble_waveform, refine_cfo, to_frequency)
from .pdu_util import make_pdu, split_pdu

FRAME_TAG = "frame_len"
DETECT_BLOCKS = 4   # FFT-filter blocks per corr_est_cc decision
# Correlator spacing of the CFO search, in carrier spacings. A residual offset d
# turns the 160-sample preamble's phase by 2*pi*d*2.5 over its length: at d = 0.1
# (half the spacing) the correlation peak is 0.9 dB down, at d = 0.3 it is 10 dB down.
CFO_SEARCH_STEP = 0.2


def _td_pdu_chain(hier, source, fft_len, max_symbols, fixed_symbols=None):
    """CP-free time-domain symbols of one hpd output, one PDU per frame.

    hpd tags payload frames with their length; header frames carry no length tag
    but always have fixed_symbols symbols, so they are framed by count.
    """
    unvector = blocks.vector_to_stream(gr.sizeof_gr_complex, fft_len)
    if fixed_symbols is None:
        framer = blocks.tagged_stream_multiply_length(gr.sizeof_gr_complex, FRAME_TAG, fft_len)
    else:
        framer = blocks.stream_to_tagged_stream(gr.sizeof_gr_complex, 1, fixed_symbols * fft_len, FRAME_TAG)
    to_pdu = pdu.tagged_stream_to_pdu(gr.types.complex_t, FRAME_TAG)
    for block in (unvector, framer):
        block.set_min_output_buffer(2 * max_symbols * fft_len)
    hier.connect(source, unvector, framer, to_pdu)
    return to_pdu


class tag_transfer(gr.sync_block):
    """Samples of input 0 out, with input 0's tags and the `key` tags of inputs 1..n_marks.

    Joins the detection branch (normalized copy, one corr_est_cc per frequency
    offset searched) back to the raw samples, which keep their amplitude for the
    analog payload. Detectors of neighbouring offsets find the same preamble a
    sample or two apart: of marks within `merge` samples of each other only the
    strongest is passed on (within one call; across calls the first stands), so
    header_payload_demux tries each frame once. Marks further apart (the
    correlation's sidelobes) all pass, as from a single detector: the demux tries
    them in turn and only a header that passes its CRC opens a frame.
    """

    def __init__(self, key="corr_start", n_marks=1, merge=2):
        gr.sync_block.__init__(self, name="gsc_tag_transfer", in_sig=[np.complex64] * (1 + int(n_marks)),
                               out_sig=[np.complex64])
        self.key = pmt.intern(key)
        self.merge = int(merge)
        self.last_mark = -(1 << 62)
        self.set_tag_propagation_policy(gr.TPP_DONT)

    def work(self, input_items, output_items):
        n = len(output_items[0])
        output_items[0][:] = input_items[0][:n]
        for tag in self.get_tags_in_window(0, 0, n):
            self.add_item_tag(0, tag.offset, tag.key, tag.value, tag.srcid)
        marks = sorted((tag for port in range(1, len(input_items))
                        for tag in self.get_tags_in_window(port, 0, n, self.key)), key=lambda t: t.offset)
        cluster = []
        for tag in marks + [None]:
            if cluster and (tag is None or tag.offset - cluster[-1].offset > self.merge):
                best = max(cluster, key=lambda t: pmt.to_double(t.value))    # corr_est_cc: the peak's size
                if best.offset - self.last_mark > self.merge:
                    self.add_item_tag(0, best.offset, best.key, best.value, best.srcid)
                    self.last_mark = best.offset
                cluster = []
            if tag is not None:
                cluster.append(tag)
        return n


def cfo_search_offsets(cfo_search: float, step: float = CFO_SEARCH_STEP) -> np.ndarray:
    """Frequency offsets (in carrier spacings) of the correlator bank that covers |CFO| <= cfo_search:
    one every `step`, each covering step/2 either side of its own."""
    half = int(np.ceil(max(float(cfo_search) - step / 2, 0.0) / step - 1e-9))
    return step * np.arange(-half, half + 1)


def rotated(template: np.ndarray, offset: float, fft_len: int) -> np.ndarray:
    """The template as it arrives with a CFO of `offset` carrier spacings."""
    return (template * np.exp(2j * np.pi * offset * np.arange(template.size) / fft_len)).astype(np.complex64)


def power_normalized(hier, source, window):
    """x[n - window/2] / rms(x[n - window + 1 .. n]): the signal at unit power over a centred window,
    built from gr-blocks; returns (normalized output block, the delay in samples)."""
    delay = blocks.delay(gr.sizeof_gr_complex, window // 2)
    mag2 = blocks.complex_to_mag_squared()
    mean = blocks.moving_average_ff(window, 1.0 / window, 4096)
    floor = blocks.add_const_ff(1e-20)
    rms = blocks.transcendental("sqrt", "float")
    to_complex = blocks.float_to_complex()
    divide = blocks.divide_cc()
    hier.connect(source, delay, (divide, 0))
    hier.connect(source, mag2, mean, floor, rms, to_complex, (divide, 1))
    return divide, window // 2


class header_decoder(gr.basic_block):
    """Preamble + header symbols -> channel estimate, decoded header, hpd command.

    Sends header_payload_demux its payload length (in OFDM symbols) with the
    header fields and channel estimate attached as tags, or #f when the CRC fails
    (the frame is then counted and reported on 'events').
    """

    def __init__(self, numerology: Numerology, max_payload_symbols: int = 4800):
        gr.basic_block.__init__(self, name="gsc_header_decoder", in_sig=None, out_sig=None)
        self.numerology = numerology
        self.max_payload_symbols = int(max_payload_symbols)
        self.codec = HeaderCodec(numerology)
        self.frames_ok = 0
        self.frames_failed = 0
        for port in ("in",):
            self.message_port_register_in(pmt.intern(port))
        for port in ("header_data", "events"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def handle(self, msg):
        _, samples = split_pdu(msg)
        n = self.numerology.fft_len
        time_symbols = np.asarray(samples, dtype=np.complex64).reshape(-1, n)
        cfo = refine_cfo(time_symbols, self.numerology, estimate_cfo(time_symbols[0]))
        symbols = to_frequency(time_symbols, self.numerology, cfo, 0)
        channel = estimate_channel(symbols[0], symbols[1], self.numerology)
        header_eq = equalize(symbols[2:2 + HEADER_OFDM_SYMBOLS], channel, self.numerology, 0)
        try:
            header = self.codec.decode(header_soft_bits(header_eq))
            if not 0 < header.payload_symbols <= self.max_payload_symbols:
                # The demux buffers hold max_payload_symbols; a longer claim is a
                # false detection whose CRC matched by chance.
                raise HeaderError(f"header claims {header.payload_symbols} payload symbols, "
                                  f"outside 1..{self.max_payload_symbols}")
        except HeaderError as err:
            self.frames_failed += 1
            self.message_port_pub(pmt.intern("header_data"), pmt.PMT_F)
            self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
                {"event": "header_lost", "reason": str(err), "snr_est_db": channel.snr_db,
                 "time": time.time()}))
            return
        self.frames_ok += 1
        # The decoded header is now known data: refine CFO and noise with it.
        known = self.codec.encode(header).reshape(HEADER_OFDM_SYMBOLS, -1) \
            * np.sqrt(power_gain(header.power_level))      # the header went out at the frame's power
        residual_cfo, noise_var = decision_directed_refinement(
            symbols[2:2 + HEADER_OFDM_SYMBOLS], known, channel, self.numerology, 0)
        cfo += residual_cfo
        channel.noise_var = noise_var
        info = header.as_dict()
        info[FRAME_TAG] = self.numerology.payload_ofdm_symbols(header.payload_symbols)
        info["snr_est_db"] = channel.snr_db
        info["cfo"] = cfo
        info["noise_var"] = channel.noise_var
        info["first_symbol"] = HEADER_OFDM_SYMBOLS  # pilot row of the first payload symbol
        meta = pmt.to_pmt(info)
        meta = pmt.dict_add(meta, pmt.intern("chan"), pmt.init_c32vector(n, channel.response))
        self.message_port_pub(pmt.intern("header_data"), meta)


class payload_equalizer(gr.basic_block):
    """Payload PDU (CP-free time-domain symbols; tags: header fields, channel, CFO) ->
    equalized fragment PDU.

    Output metadata: the header fields, snr_est_db (preamble, reference power),
    snr_eff_db (AWGN-equivalent SNR of the equalized symbols incl. power level),
    phase_slope. Payload: complex64 symbols, exactly payload_symbols long.
    """

    def __init__(self, numerology: Numerology):
        gr.basic_block.__init__(self, name="gsc_payload_equalizer", in_sig=None, out_sig=None)
        self.numerology = numerology
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.message_port_register_out(pmt.intern("snr"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def handle(self, msg):
        meta, samples = split_pdu(msg)
        if "chan" not in meta or "payload_symbols" not in meta:
            gr.log.warn("gsc payload_equalizer: payload without header tags; dropped")
            return
        channel = ChannelEstimate(response=np.asarray(meta.pop("chan"), dtype=np.complex64),
                                  noise_var=float(meta.pop("noise_var")), taps=np.array([]))
        first = int(meta.pop("first_symbol"))
        symbols = to_frequency(np.asarray(samples, dtype=np.complex64).reshape(-1, self.numerology.fft_len),
                               self.numerology, float(meta.pop("cfo")), 2 + first)
        # CFO was refined on the header: only a common phase is left to track.
        frame = equalize(symbols, channel, self.numerology, first, slope=0.0)
        n = int(meta["payload_symbols"])
        gain = np.sqrt(power_gain(int(meta["power_level"])))
        symbols = frame.symbols[:n] / gain
        noise_var = frame.noise_var[:n] / gain ** 2
        meta.pop(FRAME_TAG, None)
        meta["snr_eff_db"] = float(-10.0 * np.log10(np.mean(noise_var)))
        meta["phase_slope"] = frame.phase_slope
        meta["rx_time"] = time.time()
        self.message_port_pub(pmt.intern("out"), make_pdu(meta, symbols.astype(np.complex64)))
        self.message_port_pub(pmt.intern("snr"), make_pdu({}, np.array([meta["snr_est_db"]], np.float32)))


class ofdm_analog_rx(gr.hier_block2):
    """OFDM baseband -> equalized fragment PDUs, built from gr-digital primitives.

    Frame detection by correlating with the known two-symbol preamble
    (corr_est_cc, dynamic threshold: 160 samples of processing gain find frames
    at 0 dB where the Schmidl-Cox plateau metric cannot; a bank of them, one per
    0.2 carrier spacing of frequency offset, up to cfo_search), header/payload demux
    and CP removal (header_payload_demux), then per frame in numpy: CFO from the
    anti-periodic halves of sync word 1, derotation before the FFT (no ICI),
    channel estimate from both sync words, header decode (gr-fec Viterbi + CRC),
    ZF equalization with pilot phase tracking.

    Args:
        fft_len: FFT length.
        cp_len: cyclic prefix length in samples.
        occupied_carriers: data carriers (signed indices, DC excluded).
        pilot_carriers: pilot carriers (signed indices).
        max_fragment_symbols: largest payload per frame; sizes the stream buffers.
        detect_threshold: corr_est_cc dynamic threshold; two adjacent correlation samples
            must exceed 4 * -ln(1 - threshold) times the mean correlation power of the
            samples around them (36.8 at 0.9999). The mean includes the analog payload,
            whose power varies from fragment to fragment (up to about 3x the preamble's
            for JSCC latents): 0.99999 (46x) missed frames after loud fragments; 0.999
            lets the preamble's 12 % sidelobes through as header CRC failures.
        cfo_search: largest carrier frequency offset, in carrier spacings (0 to 1), at
            which frames are still found: one correlator per 0.2 spacing of offset
            (1.0: 11 correlators; `gsc bench frames` reports what they cost in receive
            rate). A single correlator (0.1) loses the preamble's correlation peak by about
            10 dB at 0.3 spacing (see CFO_SEARCH_STEP).
    Message ports: out (fragments), events (lost headers), snr (one-float PDU per
    frame: the preamble SNR estimate, for a QT GUI time sink).
    """

    def __init__(self, fft_len=64, cp_len=16, occupied_carriers=None, pilot_carriers=None,
                 detect_threshold=0.9999, max_fragment_symbols=4800, cfo_search=1.0):
        gr.hier_block2.__init__(self, "gsc_ofdm_analog_rx",
                                gr.io_signature(1, 1, gr.sizeof_gr_complex), gr.io_signature(0, 0, 0))
        self.message_port_register_hier_out("out")
        self.message_port_register_hier_out("events")
        self.message_port_register_hier_out("snr")
        self.numerology = numerology = Numerology.of(fft_len, cp_len, occupied_carriers, pilot_carriers)

        preamble = preamble_waveform(numerology)
        if not 0.0 <= cfo_search <= 1.0:
            raise ValueError(f"cfo_search {cfo_search}: expected 0 to 1 carrier spacing (the CFO estimator's range)")
        # One correlator per CFO_SEARCH_STEP of frequency offset: one correlator alone
        # loses a frame whose CFO exceeds about 0.2 carrier spacing, at any SNR.
        self.cfo_offsets = cfo_search_offsets(cfo_search)
        self.detectors = [digital.corr_est_cc(rotated(preamble, f, fft_len).tolist(), 1.0, 0,
                                              detect_threshold, digital.THRESHOLD_DYNAMIC)
                          for f in self.cfo_offsets]
        # corr_est_cc's dynamic threshold scales the mean correlation power of one
        # work() call; decide over several FFT-filter blocks so a call that ends
        # next to a peak does not raise its own threshold.
        for detector in self.detectors:
            detector.set_output_multiple(DETECT_BLOCKS * detector.output_multiple())
        # Detect on a copy normalized to unit power over one preamble length, so a
        # frame 10-20 dB weaker than the one before it (fading, power control) is
        # found as surely as its neighbours; the raw samples, delayed to match, go on
        # to the demux with the detectors' tags. corr_est_cc's output lags its input
        # by the preamble's length; the raw branch is delayed by the same total.
        normalized, delay = power_normalized(self, self, 2 * numerology.symbol_len)
        raw = blocks.delay(gr.sizeof_gr_complex, delay + preamble.size)
        self.join = join = tag_transfer("corr_start", n_marks=len(self.detectors))
        self.hpd = hpd = digital.header_payload_demux(
            2 + HEADER_OFDM_SYMBOLS, fft_len, cp_len, FRAME_TAG, "corr_start", True, gr.sizeof_gr_complex)
        for k, detector in enumerate(self.detectors):
            self.connect(normalized, detector, (join, 1 + k))
        self.connect(self, raw, (join, 0))
        self.connect(join, hpd)

        self.header_decoder = header_decoder(numerology, max_fragment_symbols)
        self.payload_equalizer = payload_equalizer(numerology)
        max_symbols = 2 + HEADER_OFDM_SYMBOLS + numerology.payload_ofdm_symbols(max_fragment_symbols)
        # hpd copies a whole payload at once: its input must hold a frame.
        for block in (*self.detectors, raw, join):
            block.set_min_output_buffer(2 * max_symbols * numerology.symbol_len)
        hpd.set_min_output_buffer(0, 2 * max_symbols)
        hpd.set_min_output_buffer(1, 2 * max_symbols)
        header_pdus = _td_pdu_chain(self, (hpd, 0), fft_len, max_symbols, 2 + HEADER_OFDM_SYMBOLS)
        payload_pdus = _td_pdu_chain(self, (hpd, 1), fft_len, max_symbols)
        self.msg_connect(header_pdus, "pdus", self.header_decoder, "in")
        self.msg_connect(self.header_decoder, "header_data", hpd, "header_data")
        self.msg_connect(payload_pdus, "pdus", self.payload_equalizer, "in")
        self.msg_connect(self.payload_equalizer, "out", self, "out")
        self.msg_connect(self.header_decoder, "events", self, "events")
        self.msg_connect(self.payload_equalizer, "snr", self, "snr")
