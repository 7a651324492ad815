"""The decode service on its backend, by name (decode_service.backend)."""
from .decode_service import DecodeService

SERVICE_BACKENDS = ("embedded", "ray")


def make_service(backend: str = "embedded", models_dir=None, digital_cbr: float = 1 / 6, mode: str = "batched",
                 batch_size: int = 8, max_wait_ms: float = 0.0, workers: int = 2):
    """'embedded' (threads of this process, core/decode_service.py) or 'ray' (Ray Serve on 127.0.0.1,
    core/ray_service.py, imported only when asked for)."""
    if backend == "embedded":
        return DecodeService(models_dir, digital_cbr, mode, batch_size, max_wait_ms, workers=workers)
    if backend == "ray":
        from .ray_service import RayDecodeService
        return RayDecodeService(models_dir, digital_cbr, mode, batch_size, max_wait_ms, workers)
    raise ValueError(f"decode service backend {backend!r}: use one of {', '.join(SERVICE_BACKENDS)}")
