"""Semantic decoder: equalized fragment PDUs -> reassembled, decoded image PDUs."""
import threading
import time
from collections import deque

import numpy as np
import pmt
from gnuradio import gr

from .core.frame import CONTROL_CODEC_ID, is_end_of_stream
from .core.models import CodecError
from .core.reassembly import Reassembler
from .core.refiner import Refiner, refiner_name_for
from .core.registry import codec_for_id

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
    reported in the image's metadata.

    The diffusion refiner (models/refiner) then refines the JSCC output in
    refine_steps DDIM steps: the header's value (the transmitter's choice, e.g.
    the controller's decoding effort), or this block's own when refine_steps >= 0.
    A codec the refiner was not trained for is decoded without refinement, and
    the image's metadata says so. A codec that regenerates (SPIC, C-SPIC) takes
    the same steps as its own diffusion decoder's.

    Args:
        models_dir: where model folders live ('' = default search path).
        reassembly_timeout_s: decode an incomplete image this long after its last fragment.
        refine_steps: -1 = as each header says; 0..15 = this many for every image.
        digital_cbr: channel uses per pixel value of the digital codecs (as the transmitter's).

    An end-of-stream control frame (see core/frame.py) decodes everything pending
    and is reported once on 'events'.

    Message ports: in (fragments), flush (decode everything pending), control (dict
    with refine_steps, from the next image on), out (images), events (images that
    could not be decoded, with the reason), report (the same images as a closed
    loop's lost-image report: lost, the reason and the header's SNR estimates and
    action, so the controller learns of the channel at once rather than at the
    slot's timeout).
    """

    def __init__(self, models_dir="", reassembly_timeout_s=2.0, refine_steps=-1, digital_cbr=1 / 6):
        gr.basic_block.__init__(self, name="gsc_semantic_decoder", in_sig=None, out_sig=None)
        self.models_dir = models_dir or None
        self.digital_cbr = float(digital_cbr)
        self.codecs = {}
        self.refiners = {}                       # refiner name -> Refiner
        self.refiner_names = {}                  # codec name -> refiner name (None: no refiner)
        self.refine_steps = self._checked_steps(refine_steps)
        self.reassembler = Reassembler(float(reassembly_timeout_s), self._image_symbols)
        self.lock = threading.Lock()            # one decode at a time
        self.reassembly_lock = threading.Lock()  # handler, timer and flush threads share it
        self.busy = 0                            # decodes in progress (a receiver waits for them)
        self.decode_ms = deque(maxlen=TIMINGS_KEPT)   # the latest, for the stats
        self.images_out = 0
        for port in ("in", "flush", "control"):
            self.message_port_register_in(pmt.intern(port))
        for port in ("out", "events", "report"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("in"), self.handle_fragment)
        self.set_msg_handler(pmt.intern("flush"), self.handle_flush)
        self.set_msg_handler(pmt.intern("control"), self.handle_control)
        self._stop = threading.Event()
        self.end_of_stream = threading.Event()   # set by the transmitter's end-of-stream frame

    def _work(self):
        while not self._stop.wait(0.2):
            with self.reassembly_lock:
                images = self.reassembler.expired(time.time())
            self._emit(images)

    def codec_for(self, codec_id: int):
        if codec_id not in self.codecs:
            self.codecs[codec_id] = codec_for_id(codec_id, self.models_dir, {"cbr": self.digital_cbr})
        return self.codecs[codec_id]

    def _image_symbols(self, meta) -> int:
        try:
            codec = self.codec_for(int(meta["codec_id"]))
            return codec.symbol_count(int(meta["height"]), int(meta["width"]), int(meta.get("rate_index", 0)))
        except (CodecError, ValueError):
            return 0  # unknown codec or rate: reported as a decode failure

    def handle_fragment(self, msg):
        meta, symbols = split_pdu(msg)
        if int(meta.get("codec_id", -1)) == CONTROL_CODEC_ID:
            self._control_frame(meta)
            return
        with self.reassembly_lock:
            self.busy += 1
            images = self.reassembler.add(meta, np.asarray(symbols, np.complex64), time.time())
        try:
            self._emit(images)
        finally:
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

    def refiner_for(self, codec_name: str):
        """The refiner for a codec; one ONNX session per refiner, shared by the codecs it serves."""
        if codec_name not in self.refiner_names:
            self.refiner_names[codec_name] = refiner_name_for(codec_name, self.models_dir)
        name = self.refiner_names[codec_name]
        if name is not None and name not in self.refiners:
            try:
                self.refiners[name] = Refiner(name, self.models_dir)
            except CodecError as err:
                # A missing or tampered file stays so for the run: load (and hash) it once, log it once.
                self.refiners[name] = err
                gr.log.error(f"gsc semantic_decoder: refiner {name}: {err}; images of {codec_name} are "
                             "delivered unrefined")
                raise
        refiner = self.refiners.get(name)
        if isinstance(refiner, CodecError):
            raise refiner
        return refiner

    def _refine(self, codec_name, pixels, snr_db, steps, meta):
        """The refined image; on any refiner problem the JSCC output itself, with the reason in meta."""
        try:
            refiner = self.refiner_for(codec_name)
            if refiner is None:
                meta["refine_note"] = f"no refiner was trained for {codec_name}: decoded without refinement"
                return pixels
            start = time.perf_counter()
            refined = refiner.refine(pixels, snr_db, steps, seed=int(meta.get("image_id", 0)))
        except (CodecError, ValueError) as err:
            if not isinstance(err, CodecError):      # the refiner's files: logged once in refiner_for
                gr.log.error(f"gsc semantic_decoder: image {meta.get('image_id')}: refiner: {err}; "
                             "the JSCC output is delivered unrefined")
            meta["refine_note"] = f"refiner failed ({err}): decoded without refinement"
            return pixels
        meta["refine_ms"] = (time.perf_counter() - start) * 1e3
        meta["refine_steps_applied"] = steps
        return refined

    def _control_frame(self, meta):
        """End of stream: decode what is pending now (the transmitter sends nothing more)
        and say so once on 'events'; the frame's copies and other control frames are dropped."""
        if not is_end_of_stream(meta) or self.end_of_stream.is_set():
            return
        self.flush()
        self.end_of_stream.set()
        self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
            {"event": "end_of_stream", "next_image_id": int(meta["image_id"]), "time": time.time()}))

    def handle_flush(self, _msg):
        self.flush()

    def flush(self):
        """Decode everything pending now (blocking); used at the end of a run."""
        with self.reassembly_lock:
            images = self.reassembler.drain()
        self._emit(images)

    @property
    def idle(self) -> bool:
        return self.busy == 0 and not self.reassembler.pending

    def _emit(self, images):
        for image in images:
            with self.lock:
                self._decode_one(image)

    def _decode_one(self, image):
        meta = image.meta
        try:
            codec = self.codec_for(int(meta["codec_id"]))
            start = time.perf_counter()
            steps = self.refine_steps if self.refine_steps >= 0 else int(meta.get("refine_steps", 0))
            meta["refine_steps_applied"] = 0
            if codec.regenerates:       # SPIC: the steps are its own generative decoder's
                pixels = codec.decode(image.symbols, int(meta["height"]), int(meta["width"]), image.snr_eff_db,
                                      int(meta.get("rate_index", 0)), steps=steps, seed=int(meta.get("image_id", 0)))
                meta["refine_steps_applied"] = steps
                meta["codec_detail"] = codec.last_detail
            else:
                pixels = codec.decode(image.symbols, int(meta["height"]), int(meta["width"]), image.snr_eff_db,
                                      int(meta.get("rate_index", 0)))
                if getattr(codec, "own_crcs", False) and codec.last_detail:
                    meta["codec_detail"] = codec.last_detail      # SQ-GAN: the level it decoded
                if steps:
                    pixels = self._refine(codec.name, pixels, image.snr_eff_db, steps, meta)
            meta["decode_ms"] = (time.perf_counter() - start) * 1e3
        except (CodecError, ValueError) as err:
            gr.log.error(f"gsc semantic_decoder: image {meta.get('image_id')}: {err}")
            self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
                {"event": "decode_failed", "image_id": int(meta.get("image_id", -1)), "reason": str(err),
                 "session": int(meta.get("session", 0)), "user": int(meta.get("user", 0)),
                 "fragments_lost": int(meta.get("fragments_lost", 0))}))
            self.message_port_pub(pmt.intern("report"), pmt.to_pmt(
                {"lost": True, "image_id": int(meta.get("image_id", -1)), "reason": str(err),
                 "session": int(meta.get("session", 0)),
                 **{k: meta[k] for k in LOST_REPORT_KEYS
                    if isinstance(meta.get(k), (int, float, np.number)) and np.isfinite(meta[k])}}))
            return
        self.decode_ms.append(meta["decode_ms"])
        meta.update({"codec": codec.name, "t_decoded": time.time()})
        self.images_out += 1
        self.message_port_pub(pmt.intern("out"), make_pdu(meta, pixels.reshape(-1)))
