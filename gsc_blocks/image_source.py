"""Image source: image files -> image PDUs, with a manifest of everything offered."""
import json
import threading
import itertools
import time
from collections import deque
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from .core.frame import MAX_USERS, SESSION_BITS, new_session
from .core.images import ImageError, list_images, load_image
from .pdu_util import make_pdu
from .worker import background_worker


class image_source(background_worker, gr.basic_block):
    """Reads image files and emits one PDU per image (meta: image_id, name, height, width).

    Args:
        paths: a folder, a file, or a list of files.
        first_id: image id of the first image (ids are 16-bit on air and wrap).
        interval_s: pause between images (0: as fast as the flowgraph takes them).
        manifest: JSONL path; one line per image offered: sent, or rejected with the reason.
        start_delay_s: wait after start() before the first image (lets a receiver connect).
        paced: send the first image, then one more per message on 'next' (a closed
            loop sends the next image once the last one is reported).
        session: the transmission's session id in every header and manifest record
            (-1: drawn at random at construction, so a restarted transmitter is told apart).
        user: the transmitter's user id (0..7) in every header and manifest record.
        loop: after the last image start again from the first, with new ids, until the
            flowgraph stops (a live display); no end-of-stream then.
    A file that cannot be decoded is reported in the manifest and on 'events'; the
    rest of the batch still goes out. After the last image an end-of-stream PDU (meta
    end_of_stream, images, next_image_id; no pixels) goes out on 'out', from which the
    encoder makes the end-of-stream frame, and a 'done' event is sent.
    """

    def __init__(self, paths=(), first_id=0, interval_s=0.0, manifest="", start_delay_s=0.0, paced=False,
                 session=-1, user=0, loop=False):
        gr.basic_block.__init__(self, name="gsc_image_source", in_sig=None, out_sig=None)
        self.session = new_session() if int(session) < 0 else int(session)
        self.user = int(user)
        if self.session >= 1 << SESSION_BITS or not 0 <= self.user < MAX_USERS:
            raise ValueError(f"session {session} must be -1 or 0..{(1 << SESSION_BITS) - 1}, "
                             f"user {user} 0..{MAX_USERS - 1}")
        if isinstance(paths, (str, Path)):
            paths = list_images(paths)
        # Plain strings: a Path caches its text once used, and a long batch would keep it all.
        self.paths = [str(p) for p in paths]
        self.first_id = int(first_id)
        self.interval_s = float(interval_s)
        self.start_delay_s = float(start_delay_s)
        self.manifest = Path(manifest) if manifest else None
        self.finished = threading.Event()
        self.records = deque(maxlen=256)      # the latest records (the manifest has them all)
        self.sent = self.rejected = 0
        self.hold = None                       # callable: True while the transmitter is too far behind
        self._stop = threading.Event()
        self.paced = bool(paced)
        self.loop = bool(loop)
        self._next = threading.Semaphore(0)
        self.message_port_register_in(pmt.intern("next"))
        self.set_msg_handler(pmt.intern("next"), self.handle_next)
        self.message_port_register_out(pmt.intern("out"))
        self.message_port_register_out(pmt.intern("events"))

    def handle_next(self, _msg):
        self._next.release()

    def _record(self, record):
        self.records.append(record)
        if record["status"] == "sent":
            self.sent += 1
        else:
            self.rejected += 1
        if self.manifest:
            with self.manifest.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _work(self):
        if self._stop.wait(self.start_delay_s):
            return
        offsets = itertools.count() if self.loop and self.paths else range(len(self.paths))
        waiting = False             # paced: an image went out and its 'next' has not come yet
        for offset in offsets:
            path = Path(self.paths[offset % len(self.paths)])
            if self.paced and waiting:
                while not self._next.acquire(timeout=0.1):
                    if self._stop.is_set():
                        break
                waiting = False
            while self.hold is not None and self.hold() and not self._stop.wait(0.005):
                pass            # backpressure: the radio has not taken what was framed before
            if self._stop.is_set():
                break
            image_id = (self.first_id + offset) % 65536
            try:
                image = load_image(path)
            except ImageError as err:
                gr.log.error(f"gsc image_source: {err}")
                self._record({"image_id": image_id, "session": self.session, "user": self.user,
                              "name": path.stem, "path": str(path), "status": "rejected", "reason": str(err)})
                self.message_port_pub(pmt.intern("events"), pmt.to_pmt(
                    {"event": "rejected", "image_id": image_id, "reason": str(err)}))
                continue
            h, w = image.shape[:2]
            self._record({"image_id": image_id, "session": self.session, "user": self.user, "slot": offset,
                          "name": path.stem, "path": str(path), "status": "sent", "height": h, "width": w,
                          "t_sent": time.time()})
            self.message_port_pub(pmt.intern("out"), make_pdu(
                {"image_id": image_id, "session": self.session, "user": self.user, "slot": offset,
                 "name": path.stem, "height": h, "width": w, "t_sent": time.time()},
                np.ascontiguousarray(image).reshape(-1)))
            waiting = True
            if self.interval_s:
                self._stop.wait(self.interval_s)
        if not self._stop.is_set():
            # Tells the encoder to close the stream with an end-of-stream frame.
            self.message_port_pub(pmt.intern("out"), make_pdu(
                {"end_of_stream": True, "images": len(self.paths), "session": self.session, "user": self.user,
                 "next_image_id": (self.first_id + len(self.paths)) % 65536}, np.zeros(0, np.uint8)))
        self.message_port_pub(pmt.intern("events"), pmt.to_pmt({"event": "done", "images": len(self.paths)}))
        self.finished.set()
