"""The decode service on Ray Serve: the same Decoders, batched by @serve.batch.

A local Ray instance starts on 127.0.0.1 (no dashboard, no HTTP proxy: handles
only, usage statistics off); one Serve deployment holds the models and decodes
batches of up to batch_size requests, or what arrived within max_wait_ms of the
first, `workers` batches at a time.
The caller's side submits each image as one request and hands results back in
submission order, as the embedded service does. For a service shared by hosts,
start Ray with `ray start --head --node-ip-address ...` and set RAY_ADDRESS.
"""
import asyncio
import os
import threading
import time
from collections import deque

from .decode_service import Decoders, Job, Result, ServiceStats, check_service, stamp, threads_per_batch

APP_NAME = "gsc_decode"


def _deployment(serve, workers: int):
    @serve.deployment(name="gsc_decode_service", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
    class DecodeDeployment:
        def __init__(self, models_dir, digital_cbr, batch_size, max_wait_ms):
            self.decoders = Decoders(models_dir, digital_cbr, session_threads=threads_per_batch(workers))
            self.decode.set_max_batch_size(batch_size)
            self.decode.set_batch_wait_timeout_s(max_wait_ms / 1e3)

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0, max_concurrent_batches=workers)
        async def decode(self, requests: list) -> list:
            t_start = time.time()
            jobs = [Job(r["meta"], r["symbols"], r["snr_eff_db"], r["steps"]) for r in requests]
            # in a thread: the replica's event loop keeps gathering the next batch meanwhile
            results = await asyncio.get_running_loop().run_in_executor(None, self.decoders.decode, jobs)
            for result in results:
                stamp(result, t_start, 0)
            return [{"meta": r.meta, "pixels": r.pixels, "error": r.error, "log": r.log} for r in results]

        def image_symbols(self, meta) -> int:
            return self.decoders.image_symbols(meta)

        def model_files(self) -> dict:
            return self.decoders.model_files()

    return DecodeDeployment


class RayDecodeService:
    """DecodeService's interface (submit, wait_idle, image_symbols, stats, close) on Ray Serve."""

    backend = "ray"

    def __init__(self, models_dir=None, digital_cbr: float = 1 / 6, mode: str = "batched",
                 batch_size: int = 8, max_wait_ms: float = 0.0, workers: int = 2):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
            from ray import serve
        except ImportError as err:
            raise RuntimeError(f"the ray decode service needs ray[serve] ({err}): run scripts/gsc once to "
                               "install requirements.txt, or use decode_service.backend: embedded") from err
        self.mode = mode
        self.batch_size, self.max_wait_ms, self.workers = check_service(mode, batch_size, max_wait_ms, workers)
        self.ray, self.serve = ray, serve
        self.started_ray = not ray.is_initialized()
        if self.started_ray and os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)
        elif self.started_ray:      # a local instance: its resources are this process's to set
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _node_ip_address="127.0.0.1", object_store_memory=200 * 1024 * 1024, num_cpus=os.cpu_count())
        serve.start(proxy_location="Disabled", http_options={"host": "127.0.0.1"})
        app = _deployment(serve, self.workers).bind(models_dir, float(digital_cbr), self.batch_size,
                                                    self.max_wait_ms)
        self.handle = serve.run(app, name=APP_NAME, route_prefix=None)
        self.symbol_cache = {}
        self.stats = ServiceStats()
        self.inflight = deque()
        self.cond = threading.Condition()
        self.pending = 0
        self._closed = False
        self.thread = threading.Thread(target=self._collect, name="gsc-ray-results", daemon=True)
        self.thread.start()

    def image_symbols(self, meta) -> int:
        key = tuple(int(meta.get(k, 0)) for k in ("codec_id", "height", "width", "rate_index"))
        if key not in self.symbol_cache:
            self.symbol_cache[key] = int(self.handle.image_symbols.remote(dict(meta)).result())
        return self.symbol_cache[key]

    def model_files(self) -> dict:
        return self.handle.model_files.remote().result()

    @property
    def queue_length(self) -> int:
        return self.pending

    def submit(self, job: Job, done):
        if self._closed:
            raise RuntimeError("the decode service is closed")
        job.meta["t_service_submit"] = time.time()
        response = self.handle.decode.remote({"meta": job.meta, "symbols": job.symbols,
                                              "snr_eff_db": float(job.snr_eff_db), "steps": int(job.steps)})
        with self.cond:
            self.pending += 1
            self.inflight.append((response, done))
            self.cond.notify_all()

    def _collect(self):
        while True:
            with self.cond:
                while not self.inflight and not self._closed:
                    self.cond.wait(0.2)
                if not self.inflight:
                    return
                response, done = self.inflight[0]
            reply = response.result()
            result = Result(meta=reply["meta"], pixels=reply["pixels"], error=reply["error"], log=reply["log"])
            result.meta["service_queue"] = max(0, self.pending - 1)
            if result.meta.get("service_batch", 0):
                self.stats.add(result.meta["service_batch"], float(result.meta["service_ms"]))
            try:
                done(result)
            finally:
                with self.cond:
                    self.inflight.popleft()
                    self.pending -= 1
                    self.cond.notify_all()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.time() + timeout_s
        with self.cond:
            while self.pending:
                remaining = None if deadline is None else deadline - time.time()
                if remaining is not None and remaining <= 0:
                    return False
                self.cond.wait(remaining if remaining is not None else 0.5)
            return True

    def close(self):
        self.wait_idle(60)
        self._closed = True
        with self.cond:
            self.cond.notify_all()
        self.thread.join(timeout=10)
        try:
            self.serve.delete(APP_NAME)
            if self.started_ray:
                self.serve.shutdown()
                self.ray.shutdown()
        except Exception:      # noqa: BLE001 (shutting down: nothing left to save)
            pass
