"""Analog OFDM receiver: baseband samples in, equalized fragment PDUs out."""
import time

import numpy as np
import pmt
from gnuradio import blocks, digital, gr, pdu

from .core.frame import HEADER_OFDM_SYMBOLS, HeaderCodec, HeaderError, Numerology, power_gain
from .core.ofdm_analog import (ChannelEstimate, decision_directed_refinement, decision_directed_refinements,
                                equalize, equalize_frames, estimate_cfo, estimate_cfos, estimate_channel,
                                estimate_channels, header_soft_bits, preamble_waveform, refine_cfo, refine_cfos,
                                soft_bits, to_frequencies, to_frequency)
from .pdu_util import make_pdu, split_pdu

FRAME_TAG = "frame_len"
DETECT_BLOCKS = 4   # FFT-filter blocks per corr_est_cc decision
# Correlator spacing of the CFO search, in carrier spacings. A residual offset d
# turns the 160-sample preamble's phase by 2*pi*d*2.5 over its length: at d = 0.1
# (half the spacing) the correlation peak is 0.9 dB down, at d = 0.3 it is 10 dB down.
CFO_SEARCH_STEP = 0.2
HOLD_MAX_S = 0.5      # longest a frame_receiver call waits on its hold()


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


class frame_receiver(gr.basic_block):
    """Samples with frame-start marks in, equalized fragment PDUs out: all the frames that one
    call's samples hold, at once.

    Does what header_payload_demux + header_decoder + payload_equalizer do, in the same order and
    with the same numerics, without the demux's round trip per frame (the header's samples out as a
    PDU, the decoded header back as a message, before the demux moves on): each call cuts the
    preamble and header of every mark whose header has arrived, estimates CFO and channel and
    decodes the headers of all of them together (numpy over frames, gr-fec's Viterbi per header),
    walks them in order as the demux does (a mark inside a frame already found is passed over; a
    failed header is counted and the next mark tried), then equalizes the payloads of all frames
    found, together. A frame whose payload has not all arrived waits for the next call.
    """

    def __init__(self, numerology: Numerology, max_payload_symbols: int = 4800, key="corr_start"):
        gr.basic_block.__init__(self, name="gsc_frame_receiver", in_sig=[np.complex64], out_sig=None)
        self.numerology = numerology
        self.max_payload_symbols = int(max_payload_symbols)
        self.codec = HeaderCodec(numerology)
        self.key = pmt.intern(key)
        self.frames_ok = 0
        self.frames_failed = 0
        self.header_samples = (2 + HEADER_OFDM_SYMBOLS) * numerology.symbol_len
        self.next_free = 0          # first sample after the last frame found
        self.found = {}             # mark -> decoded frame whose payload had not all arrived
        self.needed = 0             # the sample the next call waits for (a header's or payload's last, + 1)
        # hold: a callable, True while what comes after (decoder, sink) is too far behind; the block
        # then takes no samples (for up to HOLD_MAX_S per call), so its input fills and the radio
        # source pushes back (ZMQ) or reports overflows (a USRP) instead of memory piling up.
        self.hold = None
        n = numerology
        self.cut = (np.arange(2 + HEADER_OFDM_SYMBOLS)[:, None] * n.symbol_len + n.cp_len
                    + np.arange(n.fft_len)[None, :])
        for port in ("out", "events", "snr"):
            self.message_port_register_out(pmt.intern(port))
        self.set_tag_propagation_policy(gr.TPP_DONT)

    def _symbols(self, x, starts, first, count):
        """CP-free time-domain symbols [k, count, fft_len] of frames starting at `starts` (in x),
        from OFDM symbol `first` of the frame."""
        n = self.numerology
        index = (np.asarray(starts)[:, None, None] + (first + np.arange(count))[None, :, None] * n.symbol_len
                 + n.cp_len + np.arange(n.fft_len)[None, None, :])
        return x[index]

    def _headers(self, x, starts):
        """Decode the headers of frames starting at `starts` (in x), together: one dict per frame,
        its fields and estimates, or its error and SNR estimate."""
        n = self.numerology
        td = self._symbols(x, starts, 0, 2 + HEADER_OFDM_SYMBOLS)
        cfo = refine_cfos(td, n, estimate_cfos(td[:, 0]))
        fd = to_frequencies(td, n, cfo, 0)
        response, noise_var, _ = estimate_channels(fd[:, 0], fd[:, 1], n)
        header_fd = fd[:, 2:]
        symbols, noise, _ = equalize_frames(header_fd, response, noise_var, n, 0)
        headers, bits = self.codec.decode_batch(soft_bits(symbols, noise))
        out = [None] * len(starts)
        good = []
        for i, header in enumerate(headers):
            if not isinstance(header, HeaderError) and not 0 < header.payload_symbols <= self.max_payload_symbols:
                # The buffers hold max_payload_symbols; a longer claim is a false detection whose CRC
                # matched by chance.
                header = HeaderError(f"header claims {header.payload_symbols} payload symbols, "
                                     f"outside 1..{self.max_payload_symbols}")
            if isinstance(header, HeaderError):
                out[i] = {"error": str(header), "snr_est_db": _snr_db(response[i], noise_var[i])}
            else:
                out[i] = {"header": header}
                good.append(i)
        if good:
            # The decoded header is now known data: refine CFO and noise with it.
            gain = np.sqrt([power_gain(out[i]["header"].power_level) for i in good])
            known = self.codec.symbols(bits[good]) * gain[:, None]   # the header went out at the frame's power
            residual_cfo, refined = decision_directed_refinements(header_fd[good], known, response[good],
                                                                  noise_var[good], n, 0)
            for j, i in enumerate(good):
                out[i].update(cfo=float(cfo[i] + residual_cfo[j]), response=response[i],
                              noise_var=float(refined[j]), snr_est_db=_snr_db(response[i], refined[j]))
        return out

    def _payloads(self, x, frames):
        """Equalize the payloads of found frames [(start in x, decoded), ...], frames of one
        length together, and publish a fragment PDU each, in order."""
        n = self.numerology
        by_length = {}
        for k, (start, frame) in enumerate(frames):
            by_length.setdefault(n.payload_ofdm_symbols(frame["header"].payload_symbols), []).append(k)
        results = [None] * len(frames)
        for count, members in by_length.items():
            starts = [frames[k][0] for k in members]
            decoded = [frames[k][1] for k in members]
            td = self._symbols(x, starts, 2 + HEADER_OFDM_SYMBOLS, count)
            fd = to_frequencies(td, n, np.array([d["cfo"] for d in decoded]), 2 + HEADER_OFDM_SYMBOLS)
            # CFO was refined on the header: only a common phase is left to track.
            symbols, noise, slope = equalize_frames(fd, np.array([d["response"] for d in decoded]),
                                                    np.array([d["noise_var"] for d in decoded]), n,
                                                    HEADER_OFDM_SYMBOLS, slope=0.0)
            for j, k in enumerate(members):
                results[k] = (symbols[j], noise[j], slope[j])
        now = time.time()
        for (start, frame), (symbols, noise, slope) in zip(frames, results):
            header = frame["header"]
            gain = np.sqrt(power_gain(header.power_level))
            count = header.payload_symbols
            meta = header.as_dict()
            meta.update(snr_est_db=frame["snr_est_db"],
                        snr_eff_db=float(-10.0 * np.log10(np.mean(noise[:count] / gain ** 2))),
                        phase_slope=float(slope), rx_time=now)
            self.message_port_pub(pmt.intern("out"), make_pdu(meta, (symbols[:count] / gain).astype(np.complex64)))
            self.message_port_pub(pmt.intern("snr"), make_pdu({}, np.array([frame["snr_est_db"]], np.float32)))

    def forecast(self, noutput_items, ninputs):
        # Not called again until the header or payload waited for has arrived: samples come in
        # pieces of a few hundred, and a frame takes thousands.
        return [max(self.needed - self.nitems_read(0), 1)] * ninputs

    def general_work(self, input_items, output_items):
        if self.hold is not None:
            deadline = time.monotonic() + HOLD_MAX_S
            while self.hold() and time.monotonic() < deadline:
                time.sleep(0.002)
        x = input_items[0]
        size, base = len(x), self.nitems_read(0)
        marks = sorted({t.offset for t in self.get_tags_in_window(0, 0, size, self.key)})
        marks = [m for m in marks if m >= self.next_free]
        ready = [m for m in marks if m - base + self.header_samples <= size]
        todo = [m for m in ready if m not in self.found]
        decoded = dict(zip(todo, self._headers(x, [m - base for m in todo]))) if todo else {}
        decoded.update(self.found)
        self.found = {}
        frames, stop = [], base + size
        for mark in ready:
            if mark < self.next_free:
                continue                           # inside the frame just found, as the demux skips it
            result = decoded[mark]
            if "error" in result:
                self.frames_failed += 1
                self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
                    {"event": "header_lost", "reason": result["error"], "snr_est_db": result["snr_est_db"],
                     "time": time.time()}))
                continue
            end = mark + self.numerology.frame_samples(result["header"].payload_symbols)
            if end > base + size:
                self.found[mark] = result          # its payload comes with the next call
                stop, self.needed = mark, end
                break
            self.frames_ok += 1
            frames.append((mark - base, result))
            self.next_free = end
        waiting = [m for m in marks if m >= self.next_free and m - base + self.header_samples > size]
        if waiting and waiting[0] < stop:
            stop, self.needed = waiting[0], waiting[0] + self.header_samples
        elif stop == base + size:
            self.needed = 0
        if frames:
            self._payloads(x, frames)
        self.consume(0, max(stop - base, 0))
        return 0


def _snr_db(response, noise_var):
    return ChannelEstimate(response=response, noise_var=float(noise_var), taps=np.array([])).snr_db


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
        batch_frames: handle the frames found in a stretch of samples together (frame_receiver,
            the default); False: one at a time through header_payload_demux, the header decoded
            in a message handler and sent back to the demux (the same numerics; `gsc bench frames`
            times both).
    Message ports: out (fragments), events (lost headers), snr (one-float PDU per
    frame: the preamble SNR estimate, for a QT GUI time sink).
    """

    def __init__(self, fft_len=64, cp_len=16, occupied_carriers=None, pilot_carriers=None,
                 detect_threshold=0.9999, max_fragment_symbols=4800, cfo_search=1.0, batch_frames=True):
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
        for k, detector in enumerate(self.detectors):
            self.connect(normalized, detector, (join, 1 + k))
        self.connect(self, raw, (join, 0))
        max_symbols = 2 + HEADER_OFDM_SYMBOLS + numerology.payload_ofdm_symbols(max_fragment_symbols)
        # The frame handler takes a whole frame at once: its input must hold one.
        for block in (*self.detectors, raw, join):
            block.set_min_output_buffer(2 * max_symbols * numerology.symbol_len)
        if batch_frames:
            # header_decoder is the name the frame counters have in either build
            self.header_decoder = receiver = frame_receiver(numerology, max_fragment_symbols)
            self.connect(join, receiver)
            for port in ("out", "events", "snr"):
                self.msg_connect(receiver, port, self, port)
            return
        self.hpd = hpd = digital.header_payload_demux(
            2 + HEADER_OFDM_SYMBOLS, fft_len, cp_len, FRAME_TAG, "corr_start", True, gr.sizeof_gr_complex)
        self.connect(join, hpd)
        self.header_decoder = header_decoder(numerology, max_fragment_symbols)
        self.payload_equalizer = payload_equalizer(numerology)
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
