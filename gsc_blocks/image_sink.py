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
from .core.metrics import ms_ssim_batch, psnr_db_batch
from .pdu_util import split_pdu
from .worker import take_batch

MAX_BATCH = 32          # images the sink's thread writes and measures per pass at most


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


REPORT_FIELDS = ("image_id", "session", "user", "slot", "snr_est_db", "snr_eff_db", "decode_ms", "service_wait_ms",
                 "service_queue", "service_ms", "service_batch", "power_level", "rate_index", "refine_steps",
                 "psnr_db", "ms_ssim", "correct")


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
            self._write_batch([msg])
        else:
            self.pending.put(msg)

    def _work(self):
        while True:
            batch = take_batch(self.pending, MAX_BATCH)
            self._write_batch([msg for msg in batch if msg is not None])
            if batch[-1] is None:
                return

    def _write_batch(self, msgs):
        """Write the images that waited, measure them against their originals in one pass per
        image size (numpy's loops then run on whole stacks, without the GIL, instead of many
        small arrays), log and report them; an image that cannot be written is logged and
        counted, the rest go on."""
        written = []
        for msg in msgs:
            try:
                written.append(self._write_one(msg))
            except Exception as err:        # one bad image must not stop the writer
                self.write_failures += 1
                gr.log.error(f"gsc image_sink: an image could not be written: {err}")
        measured = [(image, original, record) for image, original, record, _ in written if original is not None]
        for shape in {image.shape for image, _, _ in measured}:
            group = [(image, original, record) for image, original, record in measured if image.shape == shape]
            images = np.stack([image for image, _, _ in group])
            originals = np.stack([original for _, original, _ in group])
            for (_, _, record), psnr, ssim in zip(group, psnr_db_batch(originals, images),
                                                  ms_ssim_batch(originals, images)):
                record["psnr_db"], record["ms_ssim"] = float(psnr), float(ssim)
        if self.classify:
            for image, _, record, original_path in written:
                if original_path is not None:
                    self._judge(image, original_path, record)
        records = [record for _, _, record, _ in written]
        if records:
            with self.lock:
                self.received.extend(records)
                self.count += len(records)
                with self.log_path.open("a") as fh:
                    fh.write("".join(json.dumps(record) + "\n" for record in records))
        for record in records:
            report = {k: record[k] for k in REPORT_FIELDS if k in record}
            self.message_port_pub(pmt.intern("report"), pmt.to_pmt(report))

    def _write_one(self, msg):
        """PNG file and record of one image -> (image, its original or None, record, the original's
        path or None)."""
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
        original, original_path = None, None
        if reference and reference.get("status") == "sent":
            original_path = reference["path"]
            try:
                original = load_image(reference["path"])
            except ImageError as err:
                record["metric_error"] = str(err)
            if original is not None and original.shape != image.shape:
                original = None
        return image, original, record, original_path

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
