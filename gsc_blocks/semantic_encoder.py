"""Semantic encoder: image PDUs -> fragment PDUs of complex JSCC symbols (ONNX Runtime)."""
import queue
import sys
import threading
import time
from collections import deque

import numpy as np
import pmt
from gnuradio import gr

from .core.models import CodecError
from .core.registry import make_codec
from .core.frame import control_payload, end_of_stream_meta
from .pdu_util import make_pdu, split_pdu
from .worker import take_batch

END_OF_STREAM_COPIES = 3


def fragment(symbols: np.ndarray, max_symbols: int):
    """Split symbols into near-equal fragments of at most max_symbols."""
    count = max(1, -(-symbols.size // max_symbols))
    return np.array_split(symbols, count)


TIMINGS_KEPT = 10000      # per-image timings kept for the stats: a long run must not grow
MAX_BATCH = 16            # images encoded in one model run at most

class semantic_encoder(gr.basic_block):
    """Runs the codec's ONNX encoder on each image and fragments the symbols.

    Args:
        codec: model name (a folder under models/ with card.json).
        rate_index, power_level, refine_steps: initial values, carried in every header
            (rate_index: the codec's CBR level, e.g. deepjscc_sr's symbol groups, or the
            separation baseline's MCS).
        snr_db: SNR the encoder is conditioned on (channel state at the TX).
        max_fragment_symbols: payload symbols per frame at most.
        models_dir: where model folders live ('' = default search path).
        classes: cspic's classes, comma-separated ('' = its default: SignSymbol, Pole,
            Pedestrian, Bicyclist).
        digital_cbr: channel uses per pixel value of the digital codecs (the receiver's must match).
        class_quality, class_masks: cspic's class details' WebP quality (-1: none) and whether it
            also sends the classes' full-resolution masks.
    Images are encoded in the block's own thread: the message handler queues each image with
    the settings it is to go out with, and the thread encodes what has queued up, images of one
    size and settings in one model run (up to MAX_BATCH; a codec whose encoder takes one image at
    a time encodes them one by one), and sends their fragments in arrival order.
    Message ports: in (image PDUs; an end-of-stream PDU from the image source becomes
    the end-of-stream control frame), control (dict with any of codec, rate_index,
    power_level, refine_steps, snr_db; applies from the next image), out
    (fragments), events (images that could not be encoded, with the reason).
    """

    def __init__(self, codec="deepjscc", rate_index=0, power_level=0, refine_steps=0, snr_db=10.0,
                 max_fragment_symbols=4800, models_dir="", classes="", digital_cbr=1 / 6, class_quality=40,
                 class_masks=False):
        gr.basic_block.__init__(self, name="gsc_semantic_encoder", in_sig=None, out_sig=None)
        self.models_dir = models_dir or None
        self.options = {"classes": [c.strip() for c in classes.split(",") if c.strip()] if isinstance(classes, str)
                        else list(classes), "cbr": float(digital_cbr), "class_quality": int(class_quality),
                        "class_masks": bool(class_masks)}
        self.codec = make_codec(codec, self.models_dir, self.options)
        self.settings = {"rate_index": int(rate_index), "power_level": int(power_level),
                         "refine_steps": int(refine_steps), "snr_db": float(snr_db)}
        self.max_fragment_symbols = int(max_fragment_symbols)
        self.lock = threading.Lock()
        self.images_encoded = 0
        self.images_handled = 0     # encoded or refused
        self.end_of_stream_sent = False
        self.fragments_out = 0
        self.encode_ms = deque(maxlen=TIMINGS_KEPT)   # the latest, for the stats
        for port in ("in", "control"):
            self.message_port_register_in(pmt.intern(port))
        for port in ("out", "events"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("in"), self.handle_image)
        self.set_msg_handler(pmt.intern("control"), self.handle_control)

    def handle_control(self, msg):
        command = pmt.to_python(msg)
        if not isinstance(command, dict):
            gr.log.warn("gsc semantic_encoder: control message must be a dict; ignored")
            return
        with self.lock:
            if "codec" in command and command["codec"] != self.codec.name:
                try:
                    self.codec = make_codec(str(command["codec"]), self.models_dir, self.options)
                except CodecError as err:
                    gr.log.error(f"gsc semantic_encoder: {err}")
            try:       # all or nothing: a bad value leaves every setting as it was
                changed = {key: type(self.settings[key])(command[key]) for key in self.settings if key in command}
                if "rate_index" in changed:
                    self.codec.check_rate(changed["rate_index"])
                for key in ("power_level", "refine_steps"):
                    if not 0 <= changed.get(key, 0) <= 15:
                        raise ValueError(f"{key} {changed[key]}: 0 to 15 (4 header bits)")
            except (TypeError, ValueError) as err:
                gr.log.warn(f"gsc semantic_encoder: control message {command!r:.200} ignored: {err}")
                return
            self.settings.update(changed)

    def set_snr_db(self, snr_db):
        with self.lock:
            self.settings["snr_db"] = float(snr_db)

    def _event(self, meta, reason):
        image_id = int(meta.get("image_id", -1))
        gr.log.error(f"gsc semantic_encoder: image {image_id}: {reason}")
        self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
            {"event": "encode_failed", "image_id": image_id, "reason": reason,
             "session": int(meta.get("session", 0)), "user": int(meta.get("user", 0))}))

    def start(self):
        self.pending = queue.Queue()
        self.thread = threading.Thread(target=self._work, args=(self.pending,), name="gsc-encoder", daemon=True)
        self.thread.start()
        return True

    def stop(self):
        if getattr(self, "thread", None) is not None:
            self.pending.put(None)
            self.thread.join(timeout=10)
            self.thread = None
        return True

    def handle_image(self, msg):
        meta, pixels = split_pdu(msg)
        with self.lock:
            item = (meta, pixels, self.codec, dict(self.settings))   # the settings it goes out with
        if getattr(self, "thread", None) is None:      # not running in a flowgraph: encode it here
            self._handle([item])
        else:
            self.pending.put(item)

    def _work(self, pending):
        while True:
            items = take_batch(pending, MAX_BATCH)
            done = items[-1] is None
            try:
                self._handle([item for item in items if item is not None])
            except Exception as err:      # the thread must outlive one bad batch
                gr.log.error(f"gsc semantic_encoder: {err}")
            if done:
                return

    def _handle(self, items):
        """Encode queued images, in order: runs of images of one size, codec and settings together."""
        run = []
        for meta, pixels, codec, settings in items + [(None, None, None, None)]:
            image = None
            if meta is not None and not meta.get("end_of_stream"):
                image = self._image(meta, pixels, codec)
                if image is None:
                    continue
            key = None if image is None else (id(codec), image.shape, settings["snr_db"], settings["rate_index"])
            if run and (key is None or key != run[0][0]):
                self._encode_run(run)
                run = []
            if image is not None:
                run.append((key, meta, image, codec, settings))
            elif meta is not None:
                self._end_of_stream(meta)

    def _end_of_stream(self, meta):
        """The end-of-stream control frame, END_OF_STREAM_COPIES times (a receiver needs one)."""
        header = end_of_stream_meta(int(meta.get("next_image_id", 0)), int(meta.get("session", 0)),
                                    int(meta.get("user", 0)))
        for _ in range(END_OF_STREAM_COPIES):
            self.fragments_out += 1
            self.message_port_pub(pmt.intern("out"), make_pdu(header, control_payload()))
        self.end_of_stream_sent = True

    def _image(self, meta, pixels, codec):
        """The image of an image PDU, or None (an event says why, and it counts as handled)."""
        h, w = int(meta["height"]), int(meta["width"])
        try:
            image = np.asarray(pixels, dtype=np.uint8).reshape(h, w, 3)
            codec.check_size(h, w)
            if h > 4092 or w > 4092:
                raise ValueError(f"image is {w}x{h}: the frame header carries at most 4092x4092")
        except ValueError as err:
            self._event(meta, str(err))
            self.images_handled += 1
            return None
        return image

    def _encode_run(self, run):
        _, _, _, codec, settings = run[0]
        start = time.perf_counter()
        try:
            if len(run) > 1 and codec.batch_encodes:
                encoded = codec.encode_batch(np.stack([image for _, _, image, _, _ in run]), settings["snr_db"],
                                             settings["rate_index"])
            else:
                encoded = [codec.encode(image, settings["snr_db"], settings["rate_index"]) for _, _, image, _, _ in run]
        except (ValueError, CodecError):
            if len(run) > 1:      # find the image at fault: each alone
                for item in run:
                    self._encode_run([item])
                return
            self._event(run[0][1], str(sys.exc_info()[1]))
            self.images_handled += 1
            return
        per_image = (time.perf_counter() - start) * 1e3 / len(run)
        for (_, meta, image, codec, settings), symbols in zip(run, encoded):
            self.encode_ms.append(per_image)
            self._send(meta, image.shape[:2], codec, settings, symbols)
            self.images_handled += 1

    def _send(self, meta, size, codec, settings, symbols):
        image_id = int(meta.get("image_id", -1))
        h, w = size
        parts = fragment(symbols, self.max_fragment_symbols)
        if len(parts) > 4096:
            self._event(meta, f"{len(parts)} fragments exceed the header's 4096; raise max_fragment_symbols")
            return
        self.images_encoded += 1
        for index, part in enumerate(parts):
            header = {"image_id": image_id, "fragment_index": index, "fragment_count": len(parts),
                      "codec_id": codec.codec_id, "rate_index": settings["rate_index"],
                      "power_level": settings["power_level"], "refine_steps": settings["refine_steps"],
                      "payload_symbols": int(part.size), "height": h, "width": w,
                      "session": int(meta.get("session", 0)), "user": int(meta.get("user", 0))}
            if "slot" in meta:
                header["slot"] = int(meta["slot"])
            self.fragments_out += 1
            self.message_port_pub(pmt.intern("out"), make_pdu(header, part.astype(np.complex64)))
