"""The decode service (MU-GSC): reassembled images of every user in, decoded images out.

One service is shared by all users' receivers. It keeps one model session per
codec (and per refiner), takes images in arrival order, and decodes them in
batches: up to batch_size images, or what has arrived max_wait_ms after the
first. Images of one codec, rate and size go through the JSCC decoder in one
run, and those refined with the same number of steps through the refiner in
one run per step. batch_size 1 with max_wait_ms 0 is the synchronous service:
one image at a time, in arrival order, on the same sessions.

What is cached: the codecs' and refiners' ONNX sessions (loaded and hashed
once), which refiner serves which codec, and a refiner that failed to load (so
it is reported once, not per image). Decoded images are never cached: each
depends on its own noisy symbols.

Each decoded image's metadata carries what the service measured: service_queue
(images waiting when its batch finished), service_batch (images in its batch),
service_wait_ms (queued before its batch started), service_ms (its batch's
decode time), and decode_ms = wait + decode, the delay the decoding added, which
the image's report takes back to that user's controller.

Backends (core/service_backends.py): DecodeService runs in-process (threads);
core/ray_service.py runs the same Decoders on Ray Serve.
"""
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .codec import ANALOG
from .models import CodecError, session_threads
from .refiner import Refiner, refiner_name_for
from .registry import codec_for_id

SERVICE_MODES = ("batched", "sync")


@dataclass
class Job:
    """One reassembled image to decode: its metadata (header fields, reassembly notes), its
    symbols, the effective SNR the decoder is conditioned on, and the refine steps to apply."""
    meta: dict
    symbols: np.ndarray
    snr_eff_db: float
    steps: int = 0
    t_submit: float = field(default_factory=time.time)


@dataclass
class Result:
    """A decoded image (pixels) or why not (error); meta is the job's, with what decoding added."""
    meta: dict
    pixels: np.ndarray | None = None
    error: str | None = None
    log: list = field(default_factory=list)     # problems worth a log line (e.g. a refiner file)


class Decoders:
    """The models of the decode service, one session each, and the batched decode."""

    def __init__(self, models_dir=None, digital_cbr: float = 1 / 6, session_threads: int | None = None):
        self.models_dir = models_dir or None
        self.digital_cbr = float(digital_cbr)
        self.session_threads = session_threads      # ONNX Runtime threads per session (None: the cores)
        self.codecs = {}
        self.refiners = {}            # refiner name -> Refiner, or the CodecError it failed with
        self.refiner_names = {}       # codec name -> refiner name (None: no refiner)
        self.load_lock = threading.RLock()      # workers decode at once: each model loads once
        # A codec decoded image by image keeps per-call state (last_detail, its own sessions' inputs):
        # one such decode per codec at a time. Batched ONNX runs share their sessions freely.
        self.alone_locks = {}

    def codec_for(self, codec_id: int):
        if codec_id not in self.codecs:
            with self.load_lock:
                if codec_id not in self.codecs:
                    with session_threads(self.session_threads):
                        self.codecs[codec_id] = codec_for_id(codec_id, self.models_dir, {"cbr": self.digital_cbr})
        return self.codecs[codec_id]

    def image_symbols(self, meta) -> int:
        """Symbols of a whole image by its header (0: unknown codec or rate, reported at decode)."""
        try:
            codec = self.codec_for(int(meta["codec_id"]))
            return codec.symbol_count(int(meta["height"]), int(meta["width"]), int(meta.get("rate_index", 0)))
        except (CodecError, ValueError):
            return 0

    def refiner_for(self, codec_name: str, log: list):
        """The refiner for a codec (None: none trained for it); a load failure is raised, logged once."""
        with self.load_lock:
            if codec_name not in self.refiner_names:
                self.refiner_names[codec_name] = refiner_name_for(codec_name, self.models_dir)
            name = self.refiner_names[codec_name]
            if name is not None and name not in self.refiners:
                try:
                    with session_threads(self.session_threads):
                        self.refiners[name] = Refiner(name, self.models_dir)
                except CodecError as err:
                    self.refiners[name] = err
                    log.append(f"refiner {name}: {err}; images of {codec_name} are delivered unrefined")
        refiner = self.refiners.get(name)
        if isinstance(refiner, CodecError):
            raise refiner
        return refiner

    def model_files(self) -> dict:
        files = {}
        for codec in self.codecs.values():
            files.update(codec.model_files())
        for refiner in self.refiners.values():
            if isinstance(refiner, Refiner):
                files[refiner.name] = {"denoiser": refiner.card["files"]["denoiser"]["sha256"]}
        return files

    # --- decoding ---------------------------------------------------------------
    def decode(self, jobs: list[Job]) -> list[Result]:
        """Decode jobs in as few model runs as their codecs, rates, sizes and steps allow; results
        in the jobs' order. One image's failure never fails another's."""
        with session_threads(self.session_threads):     # a codec may open a session on first use
            return self._decode(jobs)

    def _decode(self, jobs: list[Job]) -> list[Result]:
        results = [Result(meta=job.meta) for job in jobs]
        start = time.perf_counter()
        groups = {}           # analog images that decode together
        for i, job in enumerate(jobs):
            meta = job.meta
            meta["refine_steps_applied"] = 0
            try:
                codec = self.codec_for(int(meta["codec_id"]))
                h, w, rate = int(meta["height"]), int(meta["width"]), int(meta.get("rate_index", 0))
                if codec.family == ANALOG and hasattr(codec, "decode_batch"):
                    if job.symbols.size != codec.symbol_count(h, w, rate):
                        raise ValueError(f"{job.symbols.size} symbols do not make a {w}x{h} image at "
                                         f"rate_index {rate} ({codec.symbol_count(h, w, rate)} expected)")
                    groups.setdefault((codec.codec_id, rate, h, w), []).append(i)
                else:
                    results[i].pixels = self._decode_alone(codec, job)
                meta["codec"] = codec.name
            except (CodecError, ValueError) as err:
                results[i].error = str(err)
        to_refine = {}
        for (codec_id, rate, h, w), members in groups.items():
            codec = self.codecs[codec_id]
            try:
                pixels = codec.decode_batch([jobs[i].symbols for i in members], h, w,
                                            [jobs[i].snr_eff_db for i in members], rate)
            except (CodecError, ValueError) as err:
                for i in members:
                    results[i].error = str(err)
                continue
            for i, image in zip(members, pixels):
                results[i].pixels = image
                if jobs[i].steps:
                    to_refine.setdefault((codec.name, jobs[i].steps, h, w), []).append(i)
        for (codec_name, steps, _, _), members in to_refine.items():
            self._refine(codec_name, steps, [jobs[i] for i in members], [results[i] for i in members])
        elapsed_ms = (time.perf_counter() - start) * 1e3
        for result in results:
            result.meta["service_ms"] = elapsed_ms
            result.meta["service_batch"] = len(jobs)
        return results

    def _decode_alone(self, codec, job: Job) -> np.ndarray:
        with self.load_lock:
            lock = self.alone_locks.setdefault(codec.codec_id, threading.Lock())
        with lock:
            return self._decode_alone_locked(codec, job)

    def _decode_alone_locked(self, codec, job: Job) -> np.ndarray:
        meta = job.meta
        h, w, rate = int(meta["height"]), int(meta["width"]), int(meta.get("rate_index", 0))
        if codec.regenerates:       # SPIC: the steps are its own generative decoder's
            pixels = codec.decode(job.symbols, h, w, job.snr_eff_db, rate, steps=job.steps,
                                  seed=int(meta.get("image_id", 0)))
            meta["refine_steps_applied"] = job.steps
            meta["codec_detail"] = codec.last_detail
            return pixels
        pixels = codec.decode(job.symbols, h, w, job.snr_eff_db, rate)
        if getattr(codec, "own_crcs", False) and codec.last_detail:
            meta["codec_detail"] = codec.last_detail      # SQ-GAN: the level it decoded
        if job.steps:
            result = Result(meta=meta, pixels=pixels)
            self._refine(codec.name, job.steps, [job], [result])
            pixels = result.pixels
        return pixels

    def _refine(self, codec_name: str, steps: int, jobs: list[Job], results: list[Result]):
        """Refine decoded images (one size, one step count) in one batch; on a refiner problem they
        stay the JSCC output, with the reason in their metadata."""
        log = results[0].log
        try:
            refiner = self.refiner_for(codec_name, log)
            if refiner is None:
                for result in results:
                    result.meta["refine_note"] = (f"no refiner was trained for {codec_name}: "
                                                  "decoded without refinement")
                return
            start = time.perf_counter()
            refined = refiner.refine_batch(np.stack([r.pixels for r in results]), [j.snr_eff_db for j in jobs],
                                           steps, [int(j.meta.get("image_id", 0)) for j in jobs])
        except (CodecError, ValueError) as err:
            if not isinstance(err, CodecError):        # the refiner's files: logged once in refiner_for
                log.append(f"refiner: {err}; the JSCC output is delivered unrefined")
            for result in results:
                result.meta["refine_note"] = f"refiner failed ({err}): decoded without refinement"
            return
        refine_ms = (time.perf_counter() - start) * 1e3
        for result, image in zip(results, refined):
            result.pixels = image
            result.meta["refine_ms"] = refine_ms
            result.meta["refine_steps_applied"] = steps


def check_service(mode: str, batch_size: int, max_wait_ms: float, workers: int = 1) -> tuple[int, float, int]:
    """(batch_size, max_wait_ms, workers) the mode runs with; 'sync' is one image at a time, no wait,
    one worker."""
    if mode not in SERVICE_MODES:
        raise ValueError(f"decode service mode {mode!r}: use one of {', '.join(SERVICE_MODES)}")
    if int(batch_size) < 1 or not 0 <= float(max_wait_ms) <= 1000 or not 1 <= int(workers) <= 64:
        raise ValueError(f"decode service batch_size {batch_size} / max_wait_ms {max_wait_ms} / workers {workers}: "
                         "use batch_size >= 1, max_wait_ms 0 to 1000 and workers 1 to 64")
    return (1, 0.0, 1) if mode == "sync" else (int(batch_size), float(max_wait_ms), int(workers))


class ServiceStats:
    """What the service measured, per image decoded (thread-safe, the latest 10,000 kept)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = deque(maxlen=10000)        # (images in its batch, its batch's decode ms)
        self.images = 0

    def add(self, batch: int, batch_ms: float):
        """One image decoded in a batch of `batch` that took batch_ms."""
        with self.lock:
            self.entries.append((int(batch), float(batch_ms)))
            self.images += 1

    def summary(self) -> dict:
        with self.lock:
            entries = np.array(self.entries, dtype=float).reshape(-1, 2)
        if not len(entries):
            return {"images": self.images}
        return {"images": self.images, "mean_batch": float(entries[:, 0].mean()),
                "service_ms_per_image": float(np.mean(entries[:, 1] / entries[:, 0]))}


def threads_per_batch(workers: int) -> int:
    """ONNX Runtime threads for each session of a service decoding `workers` batches at once: the
    cores shared among them. On 2 cores, replaying 8 users, one thread each for two batches at
    once and both cores for one image at a time each beat the other choice (docs/performance.md)."""
    return max(1, (os.cpu_count() or 1) // int(workers))


def stamp(result: Result, t_start: float, queued: int):
    """What the service measured, in the image's metadata."""
    meta = result.meta
    wait_ms = max(0.0, (t_start - meta.get("t_service_submit", t_start)) * 1e3)
    meta["service_wait_ms"] = wait_ms
    meta["service_queue"] = int(queued)
    meta["decode_ms"] = wait_ms + float(meta.get("service_ms", 0.0))


class DecodeService:
    """The embedded (in-process) decode service: `workers` threads, each taking the next batch
    from one queue, so one batch's Python (reassembled symbols in, pixels out) overlaps another's
    model run (ONNX Runtime releases the GIL). The sync mode has one worker: one image at a time,
    in arrival order.

    submit(job, done) returns at once; done(result) is called from a worker thread, in arrival
    order within a batch.
    """

    backend = "embedded"

    def __init__(self, models_dir=None, digital_cbr: float = 1 / 6, mode: str = "batched",
                 batch_size: int = 8, max_wait_ms: float = 0.0, decoders: Decoders | None = None, workers: int = 2):
        self.mode = mode
        self.batch_size, self.max_wait_ms, self.workers = check_service(mode, batch_size, max_wait_ms, workers)
        self.decoders = decoders or Decoders(models_dir, digital_cbr, session_threads=threads_per_batch(self.workers))
        self.queue = queue.Queue()
        self.stats = ServiceStats()
        self.pending = 0                      # submitted, not yet done
        self.lock = threading.Lock()
        self.idle_event = threading.Event()
        self.idle_event.set()
        self._closed = False
        self.take_lock = threading.Lock()       # one worker gathers a batch at a time: batches stay in order
        self.threads = [threading.Thread(target=self._serve, name=f"gsc-decode-service-{i}", daemon=True)
                        for i in range(self.workers)]
        for thread in self.threads:
            thread.start()

    def image_symbols(self, meta) -> int:
        return self.decoders.image_symbols(meta)

    def model_files(self) -> dict:
        return self.decoders.model_files()

    def submit(self, job: Job, done):
        if self._closed:
            raise RuntimeError("the decode service is closed")
        job.meta["t_service_submit"] = time.time()
        with self.lock:
            self.pending += 1
            self.idle_event.clear()
        self.queue.put((job, done))

    @property
    def queue_length(self) -> int:
        return self.queue.qsize()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """True once everything submitted is done."""
        return self.idle_event.wait(timeout_s)

    def _next_batch(self):
        try:
            first = self.queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_ms / 1e3
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _serve(self):
        while not (self._closed and self.queue.empty()):
            with self.take_lock:
                batch = self._next_batch()
            if not batch:
                continue
            if any(item is None for item in batch):        # close() wakes the thread
                batch = [item for item in batch if item is not None]
                if not batch:
                    continue
            t_start = time.time()
            results = self.decoders.decode([job for job, _ in batch])
            queued = self.queue.qsize()
            for (_, done), result in zip(batch, results):
                stamp(result, t_start, queued)
                self.stats.add(len(batch), float(result.meta.get("service_ms", 0.0)))
                try:
                    done(result)
                finally:
                    with self.lock:
                        self.pending -= 1
                        if self.pending == 0:
                            self.idle_event.set()

    def close(self):
        self._closed = True
        for thread in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join(timeout=30)


def save_fragments(path, fragments):
    """[(arrival time, meta dict, complex64 symbols)] -> one .npz (no pickles: the metadata as JSON)."""
    import json
    sizes = np.array([len(f[2]) for f in fragments], np.int64)
    np.savez(path, t=np.array([f[0] for f in fragments], np.float64),
             meta=np.array(json.dumps([{k: v for k, v in f[1].items() if isinstance(v, (int, float, str))}
                                       for f in fragments])),
             sizes=sizes,
             symbols=np.concatenate([f[2] for f in fragments]) if fragments else np.zeros(0, np.complex64))


def load_fragments(path) -> list[tuple]:
    import json
    with np.load(path, allow_pickle=False) as data:
        metas = json.loads(str(data["meta"]))
        parts = np.split(data["symbols"], np.cumsum(data["sizes"])[:-1]) if len(data["sizes"]) else []
        return list(zip(data["t"].tolist(), metas, parts))
