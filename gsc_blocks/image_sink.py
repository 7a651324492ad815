"""Image sink: decoded image PDUs -> PNG files, metrics and a JSONL log."""
import json
import queue
import threading
from collections import deque
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from .core.images import ImageError, load_image, save_png
from .core.metrics import ms_ssim, psnr_db
from .pdu_util import split_pdu


class ManifestReader:
    """The TX manifest as it grows, as {(session, image_id): record} (the last record of a key
    wins): each refresh reads only the lines appended since the last (the transmitter appends
    as it goes, a restarted one under a new session), so a long run costs no re-read of the
    whole file."""

    def __init__(self, path):
        self.path = Path(path)
        self.records = {}
        self.offset = 0
        self.refresh()

    def refresh(self):
        if not self.path.is_file():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1            # a line still being written waits for the next refresh
        for line in chunk[:end].decode().splitlines():
            if line.strip():
                record = json.loads(line)
                self.records[(int(record.get("session", 0)), int(record["image_id"]))] = record
        self.offset += end

    def get(self, key):
        if key not in self.records:
            self.refresh()
        return self.records.get(key)

    def take(self, key):
        """get, and forget the record: a long run keeps only those of images not yet received."""
        record = self.get(key)
        self.records.pop(key, None)
        return record


class image_sink(gr.basic_block):
    """Writes each received image as <out_dir>/rx_<session>_<id>_<name>.png and one JSONL line
    (header fields, SNR estimates, fragments lost, decode time and, where the
    TX manifest names the original, PSNR and MS-SSIM against it).

    The metrics and the file writing run in the sink's own thread, off the receive path: the
    message handler only queues each image; stop() writes what is still queued before it returns.

    The 'report' port publishes one dict per image (slot, SNR estimates, decode
    time, PSNR and MS-SSIM when known, and with classify whether the classifier
    labels the image right) for the transmitter's controller.

    Args:
        out_dir: folder for images and received.jsonl.
        manifest: the TX manifest JSONL ('' = no metrics here; the report adds them).
        classify: run the CIFAR-10 classifier (models/cifar_classifier) on each 32x32
            image whose original's file name carries its label (<index>_<class>.*) and
            record 'correct' (true/false).
    """

    def __init__(self, out_dir="gsc_out", manifest="", classify=False):
        gr.basic_block.__init__(self, name="gsc_image_sink", in_sig=None, out_sig=None)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.log_path = self.out_dir / "received.jsonl"
        self.count = 0                       # images written
        self.write_failures = 0              # images that could not be written (logged)
        self.received = deque(maxlen=256)    # the latest records (received.jsonl has them all)
        self.references = ManifestReader(manifest) if manifest else None
        self.classify = bool(classify)
        self.classifier = None
        self.lock = threading.Lock()
        self.pending = queue.Queue()
        self.thread = None
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("report"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def start(self):
        self.thread = threading.Thread(target=self._work, name="gsc-image-sink", daemon=True)
        self.thread.start()
        return True

    def stop(self):
        if self.thread is not None:
            self.pending.put(None)          # after every image queued so far
            self.thread.join(timeout=60)
            self.thread = None
        return True

    def handle(self, msg):
        if self.thread is None:             # not running in a flowgraph: write it here
            self._write(msg)
        else:
            self.pending.put(msg)

    def _work(self):
        while True:
            msg = self.pending.get()
            if msg is None:
                return
            try:
                self._write(msg)
            except Exception as err:        # one bad image must not stop the writer
                self.write_failures += 1
                gr.log.error(f"gsc image_sink: an image could not be written: {err}")

    def _write(self, msg):
        meta, pixels = split_pdu(msg)
        h, w = int(meta["height"]), int(meta["width"])
        image = np.asarray(pixels, np.uint8).reshape(h, w, 3)
        image_id = int(meta["image_id"])
        key = (int(meta.get("session", 0)), image_id)
        record = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in meta.items()
                  if isinstance(v, (int, float, str, np.integer, np.floating))}
        record["fragments_missing"] = [int(i) for i in meta.get("fragments_missing", [])]
        record["fragments_damaged"] = [int(i) for i in meta.get("fragments_damaged", [])]
        reference = self.references.take(key) if self.references is not None else None
        name = reference["name"] if reference else f"{image_id}"
        record["file"] = f"rx_{key[0]:04d}_{image_id:05d}_{name}.png"
        save_png(self.out_dir / record["file"], image)
        if reference and reference.get("status") == "sent":
            try:
                original = load_image(reference["path"])
                if original.shape == image.shape:
                    record["psnr_db"] = psnr_db(original, image)
                    record["ms_ssim"] = ms_ssim(original, image)
            except ImageError as err:
                record["metric_error"] = str(err)
            if self.classify:
                self._judge(image, reference["path"], record)
        with self.lock:
            self.received.append(record)
            self.count += 1
            with self.log_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        report = {k: record[k] for k in ("image_id", "session", "user", "slot", "snr_est_db", "snr_eff_db", "decode_ms",
                                         "service_wait_ms", "service_queue", "service_ms", "service_batch",
                                         "power_level", "rate_index", "refine_steps", "psnr_db", "ms_ssim",
                                         "correct") if k in record}
        self.message_port_pub(pmt.intern("report"), pmt.to_pmt(report))

    def _judge(self, image, original_path, record):
        """record['correct']: does the classifier label the received image as the original's class
        (from its file name)? Left out for other sizes and unlabelled names."""
        from .core.models import CodecError
        from .core.semantic import Classifier, cifar_label
        if image.shape != (32, 32, 3):
            return
        if self.classifier is None:
            try:
                self.classifier = Classifier()
            except CodecError as err:
                gr.log.error(f"gsc image_sink: classify: {err}; images are not classified")
                self.classify = False
                return
        label = cifar_label(original_path)
        if label in self.classifier.classes:
            record["correct"] = bool(self.classifier.predict(image)[0] == self.classifier.label_index(label))
