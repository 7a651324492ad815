"""Analog OFDM transmitter: fragment PDUs in, baseband samples out."""
import threading

import numpy as np
import pmt
from gnuradio import blocks, digital, fft, gr, pdu

from .core.frame import HEADER_DEFAULTS, HEADER_OFDM_SYMBOLS, FrameHeader, HeaderCodec, Numerology, power_gain
from .pdu_util import make_pdu, split_pdu

LENGTH_TAG = "packet_len"
IDLE_CHUNK = 1024        # zeros a continuous transmitter sends at a time while it has no frame
# Zeros sent once every frame built has gone out (the end of a burst): the receiver's correlators
# and delay line work in blocks (about 1400 samples at the default numerology) and release a frame's
# tail only when samples after it arrive. A radio's receive stream never stops; a ZMQ stream does
# while the transmitter waits for its encoder, and the frame before the pause then waited there.
RELEASE_ZEROS = 4096
FRAME_QUEUE_SYMBOLS = 1 << 19   # frame symbols (4 MiB) the PDU-to-stream buffer holds; see ofdm_analog_tx


class frame_builder(gr.basic_block):
    """Fragment PDU -> PDU of [coded BPSK header | analog payload] symbols.

    The fragment's metadata must hold every FrameHeader field. The power level
    scales header and payload (the sync words stay at reference power, so the
    receiver measures the channel at reference power and knows the boost).
    """

    def __init__(self, numerology: Numerology = Numerology(), guard_symbols: int = 1, flusher=None,
                 idle_zeros: int = 0):
        gr.basic_block.__init__(self, name="gsc_frame_builder", in_sig=None, out_sig=None)
        self.header_codec = HeaderCodec(numerology)
        self.numerology = numerology
        self.flusher = flusher
        self.idle_zeros = int(idle_zeros)
        self.frames_built = 0
        self.samples_queued = 0     # baseband samples of all frames built so far
        bits = np.random.default_rng(0x6A7D).integers(0, 4, guard_symbols * numerology.n_data)
        self.guard = (np.exp(1j * (np.pi / 4 + np.pi / 2 * bits))).astype(np.complex64)
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def handle(self, msg):
        meta, payload = split_pdu(msg)
        names = [name for name in FrameHeader.__dataclass_fields__ if name in meta or name not in HEADER_DEFAULTS]
        missing = [name for name in names if name not in meta]
        if missing:
            gr.log.error(f"gsc frame_builder: fragment PDU lacks {missing}; dropped")
            return
        header = FrameHeader(**{name: int(meta[name]) for name in names})
        symbols = np.asarray(payload, dtype=np.complex64)
        if symbols.size != header.payload_symbols:
            gr.log.error(f"gsc frame_builder: payload has {symbols.size} symbols, "
                         f"header says {header.payload_symbols}; dropped")
            return
        gain = np.float32(np.sqrt(power_gain(header.power_level)))
        # Zero-fill the last payload symbol, then add guard symbols: the receiver's
        # sync delay line needs samples after a frame to release it. The guard
        # carries fixed QPSK so it is not anti-periodic like the Schmidl-Cox word
        # (pilots alone sit on odd carriers and would trigger the detector).
        n_data = self.numerology.n_data
        start = self.header_codec.slots
        payload_slots = n_data * self.numerology.payload_ofdm_symbols(symbols.size)
        frame = np.zeros(start + payload_slots + self.guard.size, dtype=np.complex64)
        frame[:start] = self.header_codec.encode(header)
        frame[start:start + symbols.size] = symbols
        frame[start + payload_slots:] = self.guard
        frame *= gain
        self.frames_built += 1
        self.samples_queued += self.numerology.symbol_len * (2 + frame.size // n_data)
        # PDU metadata becomes stream tags on the frame's first sample: a trace-driven
        # channel reads the image slot from there.
        tags = {"gsc_slot": int(meta["slot"])} if "slot" in meta else {}
        self.message_port_pub(pmt.intern("out"), make_pdu(tags, frame.astype(np.complex64)))
        if self.idle_zeros and self.flusher is not None:
            # Idle the air after the frame, as a radio between bursts does: a paced
            # sender waits for this frame's report, which needs the frame released.
            self.flusher.request(self.samples_queued, self.idle_zeros)


class tail_flusher(gr.basic_block):
    """Pass samples through; on a 'flush' message append zeros after the frames.

    Sent after the last frame so a receiver's correlator and demux release it;
    a radio idles with zeros between bursts anyway, a ZMQ stream does not. The
    message is a dict {"after": samples, "zeros": n}: the zeros go out only once
    'after' samples have passed, so they never land inside a frame. Tags move with
    their samples (the zeros shift them, which the default propagation would not
    follow: a channel reading gsc_slot tags would stay on the first slot).

    With `built` set (a callable: the frame samples built so far), RELEASE_ZEROS zeros
    also go out by themselves whenever every frame built has passed and no zeros
    followed them yet: the end of each burst reaches the receiver without waiting
    for the next burst.
    """

    def __init__(self):
        gr.basic_block.__init__(self, name="gsc_tail_flusher", in_sig=[np.complex64], out_sig=[np.complex64])
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.pending = 0
        self.passed = 0          # frame samples passed through
        self.frames_end = 0      # output offset just after the last frame sample passed
        self.release_after = 0
        self.lock = threading.Lock()
        self.built = None        # callable: the frame samples built so far (releases bursts)
        self.released = 0        # frame samples passed when zeros last followed them
        # Continuous: while every frame built has passed, zeros go out (a radio on the air idles
        # with zeros between bursts). A multi-user air sums such streams, and a sum needs every
        # input to keep flowing.
        self.continuous = False
        self.message_port_register_in(pmt.intern("flush"))
        self.set_msg_handler(pmt.intern("flush"), self.handle_flush)

    def handle_flush(self, msg):
        request = pmt.to_python(msg)
        if not isinstance(request, dict):
            request = {"zeros": int(request) if isinstance(request, int) else 4096}
        self.request(int(request.get("after", 0)), int(request.get("zeros", 4096)))

    def request(self, after: int, zeros: int):
        with self.lock:
            self.release_after = max(self.release_after, after)
            self.pending += zeros

    @property
    def idle(self) -> bool:
        return self.pending == 0

    def _all_passed(self) -> bool:
        return self.built is not None and self.passed >= self.built()

    def _idle_fill(self) -> bool:
        return self.continuous and self._all_passed()

    def _release_due(self) -> bool:
        return self.passed > self.released and self._all_passed()

    def forecast(self, noutput_items, ninputs):
        ready = (self.pending and self.passed >= self.release_after) or self._idle_fill() or self._release_due()
        return [0 if ready else noutput_items]

    def general_work(self, input_items, output_items):
        n = min(len(input_items[0]), len(output_items[0]))
        if n:
            output_items[0][:n] = input_items[0][:n]
            shift = self.nitems_written(0) - self.nitems_read(0)
            for tag in self.get_tags_in_window(0, 0, n):
                self.add_item_tag(0, tag.offset + shift, tag.key, tag.value, tag.srcid)
            self.consume(0, n)
            self.passed += n
            self.frames_end = self.nitems_written(0) + n
            return n
        with self.lock:
            if not self.pending and not self.continuous and self._release_due():
                self.pending = RELEASE_ZEROS
                self.release_after = max(self.release_after, self.passed)
            if self.pending and self.passed >= self.release_after:
                n = min(self.pending, len(output_items[0]))
                output_items[0][:n] = 0
                self.pending -= n
                self.released = self.passed
                return n
        if self._idle_fill():
            n = min(IDLE_CHUNK, len(output_items[0]))
            output_items[0][:n] = 0
            self.released = self.passed
            return n
        return 0


class ofdm_analog_tx(gr.hier_block2):
    """Fragment PDUs -> OFDM baseband, built from gr-digital primitives.

    Message ports: in (fragment PDUs), flush (an integer: zero samples to append
    once the frames sent so far are out; send it after the last fragment).

    Args:
        fft_len: FFT length.
        cp_len: cyclic prefix length in samples.
        occupied_carriers: data carriers (signed indices, DC excluded).
        pilot_carriers: pilot carriers (signed indices).
        amplitude: RMS amplitude of the output samples at power level 0.
        max_fragment_symbols: largest payload per frame; sizes the stream buffers,
            which must hold a whole frame.
        idle_zeros: zero samples sent after every frame (0: none); a closed loop
            that waits for each frame's report needs them over ZMQ.
        guard_symbols: OFDM symbols of fixed QPSK closing each frame.

    Once every frame built has gone out, RELEASE_ZEROS zeros follow by themselves, so the
    receiver releases the last frame of a burst without waiting for the next burst.
    """

    def __init__(self, fft_len=64, cp_len=16, occupied_carriers=None, pilot_carriers=None,
                 amplitude=0.1, guard_symbols=1, max_fragment_symbols=4800, idle_zeros=0):
        gr.hier_block2.__init__(self, "gsc_ofdm_analog_tx", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self.message_port_register_hier_in("in")
        self.numerology = numerology = Numerology.of(fft_len, cp_len, occupied_carriers, pilot_carriers)

        self.flusher = tail_flusher()
        self.builder = frame_builder(numerology, guard_symbols, self.flusher, idle_zeros)
        self.flusher.built = lambda: self.builder.samples_queued
        to_stream = pdu.pdu_to_tagged_stream(gr.types.complex_t, LENGTH_TAG)
        allocator = digital.ofdm_carrier_allocator_cvc(
            fft_len, [list(numerology.occupied_carriers)], [list(numerology.pilot_carriers)],
            [list(row) for row in numerology.pilot_symbols], list(map(list, numerology.sync_words)),
            LENGTH_TAG, True)
        ifft = fft.fft_vcc(fft_len, False, (), True)
        prefixer = digital.ofdm_cyclic_prefixer(fft_len, fft_len + cp_len, 0, LENGTH_TAG)
        n_active = len(numerology.occupied_carriers) + len(numerology.pilot_carriers)
        self.scale = blocks.multiply_const_cc(amplitude / np.sqrt(n_active))

        self.message_port_register_hier_in("flush")
        # Tagged-stream blocks need a whole frame in one buffer. The PDU-to-stream block is a
        # source: when its next frame does not fit its output buffer it produces nothing and
        # sleeps until the next message arrives (or a scheduler timeout), not until the buffer
        # drains. With no more messages coming (the end of a batch) its queued frames then went
        # out at 40-50 frames/s, against 300+ while frames kept arriving. Its buffer therefore
        # holds FRAME_QUEUE_SYMBOLS, as many as a transmitter queues.
        n_sym = 2 + HEADER_OFDM_SYMBOLS + numerology.payload_ofdm_symbols(max_fragment_symbols) + guard_symbols
        to_stream.set_min_output_buffer(max(2 * n_sym * numerology.n_data, FRAME_QUEUE_SYMBOLS))
        for block in (allocator, ifft):
            block.set_min_output_buffer(2 * n_sym)
        for block in (prefixer, self.scale, self.flusher):
            block.set_min_output_buffer(2 * n_sym * numerology.symbol_len)
        self.msg_connect(self, "in", self.builder, "in")
        self.msg_connect(self, "flush", self.flusher, "flush")
        self.msg_connect(self.builder, "out", to_stream, "pdus")
        self.connect(to_stream, allocator, ifft, prefixer, self.scale, self.flusher, self)

    def set_amplitude(self, amplitude):
        n_active = len(self.numerology.occupied_carriers) + len(self.numerology.pilot_carriers)
        self.scale.set_k(amplitude / np.sqrt(n_active))
