"""Semantic decoder: equalized fragment PDUs -> reassembled, decoded image PDUs."""
import threading
import time
from collections import deque

import numpy as np
import pmt
from gnuradio import gr

from .core.frame import CONTROL_CODEC_ID, is_end_of_stream
from .core.decode_service import Job, save_fragments
from .core.service_backends import make_service
from .core.reassembly import Reassembler

# what a lost image's report carries from its header (when known): the controller's next decision needs the SNR
LOST_REPORT_KEYS = ("snr_est_db", "snr_eff_db", "power_level", "rate_index", "refine_steps")
from .pdu_util import make_pdu, split_pdu
from .worker import background_worker


TIMINGS_KEPT = 10000      # per-image timings kept for the stats: a long run must not grow

class semantic_decoder(background_worker, gr.basic_block):
    """Reassembles fragments per image and runs the codec's ONNX decoder.

    The codec is chosen per image from the header's codec id. The decoder is
    conditioned on the measured SNR (AWGN-equivalent, from the receiver's
    channel estimate). A fragment that never arrives is decoded as an erasure
    (zero symbols) once the image's timeout passes or a flush comes, and
    reported in the image's metadata; should it come after all, it is dropped and
    reported on 'events' (fragment_late), never decoded as a second copy.

    The diffusion refiner (models/refiner) then refines the JSCC output in
    refine_steps DDIM steps: the header's value (the transmitter's choice, e.g.
    the controller's decoding effort), or this block's own when refine_steps >= 0.
    A codec the refiner was not trained for is decoded without refinement, and
    the image's metadata says so. A codec that regenerates (SPIC, C-SPIC) takes
    the same steps as its own diffusion decoder's.

    Decoding runs on a decode service (core/decode_service.py): embedded in this
    block (threads of its own) or on Ray Serve (core/ray_service.py), shared by
    every receiver that feeds this block (one per user in a multi-user receiver).
    It batches images across users: up to batch_size, or those that arrived
    max_wait_ms after the first; service 'sync' decodes one image at a time.

    Args:
        models_dir: where model folders live ('' = default search path).
        reassembly_timeout_s: decode an incomplete image this long after its last fragment.
        refine_steps: -1 = as each header says; 0..15 = this many for every image.
        digital_cbr: channel uses per pixel value of the digital codecs (as the transmitter's).
        service: 'batched' or 'sync'.
        batch_size, max_wait_ms: the batched service's limits.
        workers: batches decoded at once (the batched service; sync has one).
        backend: 'embedded' or 'ray'.
        streams: transmitters whose end-of-stream frames end the stream (one per user).
        record: a .npz path: every fragment received is written there when the flowgraph stops
            (core/decode_service.py save_fragments), for a replay of the decode service alone.

    An end-of-stream control frame (see core/frame.py) decodes everything pending
    and is reported once on 'events'.

    Message ports: in (fragments), flush (decode everything pending), control (dict
    with refine_steps, from the next image on), out (images), events (images that
    could not be decoded, with the reason), report (the same images as a closed
    loop's lost-image report: lost, the reason and the header's SNR estimates and
    action, so the controller learns of the channel at once rather than at the
    slot's timeout).
    """

    def __init__(self, models_dir="", reassembly_timeout_s=2.0, refine_steps=-1, digital_cbr=1 / 6,
                 service="batched", batch_size=8, max_wait_ms=0.0, backend="embedded", streams=1,
                 record="", workers=2):
        gr.basic_block.__init__(self, name="gsc_semantic_decoder", in_sig=None, out_sig=None)
        self.models_dir = models_dir or None
        self.digital_cbr = float(digital_cbr)
        self.refine_steps = self._checked_steps(refine_steps)
        self.service = make_service(backend, self.models_dir, self.digital_cbr, service, batch_size, max_wait_ms,
                                    workers)
        self.reassembler = Reassembler(float(reassembly_timeout_s), self.service.image_symbols)
        self.reassembly_lock = threading.Lock()  # handler, timer and flush threads share it
        self.busy = 0                            # fragments being handled (a receiver waits for them)
        self.handler_free_at = 0.0               # when the fragment handler last returned
        self.decode_ms = deque(maxlen=TIMINGS_KEPT)   # the latest, for the stats
        self.images_out = 0
        self.images_submitted = 0                # to the decode service
        self.images_failed = 0                   # came back from it undecoded
        self.logged = set()                      # problems already logged (a broken refiner: once)
        for port in ("in", "flush", "control"):
            self.message_port_register_in(pmt.intern(port))
        for port in ("out", "events", "report"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("in"), self.handle_fragment)
        self.set_msg_handler(pmt.intern("flush"), self.handle_flush)
        self.set_msg_handler(pmt.intern("control"), self.handle_control)
        self._stop = threading.Event()
        self.end_of_stream = threading.Event()   # set by the transmitters' end-of-stream frames
        self.streams = int(streams)
        self.streams_ended = set()               # (session, user) of the end-of-stream frames seen
        self.record = record
        self.recorded = []                       # (arrival time, meta, symbols) when recording

    def _work(self):
        while not self._stop.wait(0.2):
            # While the fragment handler waits on the decode service (backpressure), the fragments
            # behind it wait in its queue: time out only on fragments it could have handled, from
            # when it was last free.
            if self.busy:
                continue
            with self.reassembly_lock:
                images = self.reassembler.expired(time.time(), since=self.handler_free_at)
            self._emit(images)

    def handle_fragment(self, msg):
        meta, symbols = split_pdu(msg)
        if self.record:
            self.recorded.append((time.time(), meta, np.asarray(symbols, np.complex64)))
        if int(meta.get("codec_id", -1)) == CONTROL_CODEC_ID:
            self._control_frame(meta)
            return
        with self.reassembly_lock:
            self.busy += 1
            late = self.reassembler.late
            images = self.reassembler.add(meta, np.asarray(symbols, np.complex64), time.time())
            late = self.reassembler.late > late
        if late:
            self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
                {"event": "fragment_late", "image_id": int(meta.get("image_id", -1)),
                 "fragment_index": int(meta.get("fragment_index", -1)), "session": int(meta.get("session", 0)),
                 "user": int(meta.get("user", 0)), "time": time.time(),
                 "reason": "came after its image was decoded without it (dropped); if the link is this slow, "
                           "raise rx.reassembly_timeout_s"}))
        try:
            self._emit(images)
        finally:
            self.handler_free_at = time.time()
            self.busy -= 1

    @staticmethod
    def _checked_steps(steps) -> int:
        steps = int(steps)
        if not -1 <= steps <= 15:
            raise ValueError(f"refine_steps {steps}: use -1 (as the header says) or 0 to 15")
        return steps

    def set_refine_steps(self, steps):
        self.refine_steps = self._checked_steps(steps)

    def handle_control(self, msg):
        try:
            command = pmt.to_python(msg)
            self.set_refine_steps(command["refine_steps"])
        except (KeyError, TypeError, ValueError) as err:
            gr.log.error(f"gsc semantic_decoder: control message {pmt.to_python(msg)!r} ignored: {err} "
                         "(send a dict with refine_steps -1..15)")

    def _control_frame(self, meta):
        """End of a transmitter's stream: decode what is pending of it now (it sends nothing more);
        once every transmitter's has come, say so once on 'events'. The frame's copies and other
        control frames are dropped."""
        stream = (int(meta.get("session", 0)), int(meta.get("user", 0)))
        if not is_end_of_stream(meta) or stream in self.streams_ended or self.end_of_stream.is_set():
            return
        self.streams_ended.add(stream)
        with self.reassembly_lock:
            images = self.reassembler.drain(lambda m: (int(m.get("session", 0)), int(m.get("user", 0))) == stream)
        self._emit(images)
        if len(self.streams_ended) < self.streams:
            return
        self.flush()
        self.end_of_stream.set()
        self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
            {"event": "end_of_stream", "next_image_id": int(meta["image_id"]), "time": time.time(),
             "streams": len(self.streams_ended)}))

    def handle_flush(self, _msg):
        self.flush()

    def flush(self, timeout_s: float = 600.0):
        """Decode everything pending now and wait for it; used at the end of a run."""
        with self.reassembly_lock:
            images = self.reassembler.drain()
        self._emit(images)
        self.service.wait_idle(timeout_s)

    @property
    def idle(self) -> bool:
        return self.busy == 0 and not self.reassembler.pending and self.service.wait_idle(0)

    def stop(self):
        self.service.wait_idle(30)
        if self.record:
            save_fragments(self.record, self.recorded)
        return background_worker.stop(self)

    def _emit(self, images):
        for image in images:
            meta = image.meta
            steps = self.refine_steps if self.refine_steps >= 0 else int(meta.get("refine_steps", 0))
            self.images_submitted += 1
            self.service.submit(Job(meta, image.symbols, image.snr_eff_db, steps), self._publish)

    def _publish(self, result):
        """The service's result for one image: out, or events + report when it did not decode."""
        meta = result.meta
        for line in result.log:
            if line not in self.logged:
                self.logged.add(line)
                gr.log.error(f"gsc semantic_decoder: {line}")
        if result.error is not None:
            self.images_failed += 1
            gr.log.error(f"gsc semantic_decoder: image {meta.get('image_id')}: {result.error}")
            self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
                {"event": "decode_failed", "image_id": int(meta.get("image_id", -1)), "reason": result.error,
                 "session": int(meta.get("session", 0)), "user": int(meta.get("user", 0)),
                 "fragments_lost": int(meta.get("fragments_lost", 0))}))
            self.message_port_pub(pmt.intern("report"), pmt.to_pmt(
                {"lost": True, "image_id": int(meta.get("image_id", -1)), "reason": result.error,
                 "session": int(meta.get("session", 0)), "user": int(meta.get("user", 0)),
                 **{k: meta[k] for k in LOST_REPORT_KEYS
                    if isinstance(meta.get(k), (int, float, np.number)) and np.isfinite(meta[k])}}))
            return
        self.decode_ms.append(meta["decode_ms"])
        meta["t_decoded"] = time.time()
        self.images_out += 1
        self.message_port_pub(pmt.intern("out"), make_pdu(meta, result.pixels.reshape(-1)))
