"""The classical separation baseline: a Pillow image codec as the payload coder of
the digital family (core/digital.py: CRC, LDPC, interleaving, QAM).

It fills exactly the channel uses a semantic codec gets (the same CBR), so
both travel in the same OFDM frames and are compared side by side. The source
codecs are Pillow's JPEG 2000, WebP and AVIF encoders; each image gets the
best-quality stream that fits the MCS's bytes.

Payload (bytes): source codec id (1), stream length (3), stream.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from .digital import DigitalCodec
from .models import CodecError

SEPARATION_CODEC_ID = 15           # header codec id (4 bits); learned codecs take theirs from their cards
PAYLOAD_HEADER_BYTES = 4           # source codec id + stream length
SOURCE_CODECS = {"jpeg2000": 1, "webp": 2, "avif": 3}


class BudgetError(ValueError):
    """The byte budget cannot hold any stream of the source codec."""

    def __init__(self, message: str, smallest: int):
        super().__init__(message)
        self.smallest = smallest


def encode_source(image: np.ndarray, source_codec: str, budget: int) -> bytes:
    """The best-quality stream of one Pillow codec that fits `budget` bytes."""
    if source_codec not in SOURCE_CODECS:
        raise ValueError(f"source codec {source_codec!r} is not known; use one of {sorted(SOURCE_CODECS)}")
    pil = Image.fromarray(image)

    def save(quality):
        buf = io.BytesIO()
        if source_codec == "jpeg2000":
            # quality = compression ratio; no JP2 boxes, just the codestream
            pil.save(buf, "JPEG2000", no_jp2=True, irreversible=True, quality_mode="rates",
                     quality_layers=[quality])
        elif source_codec == "webp":
            pil.save(buf, "WEBP", quality=quality, method=4)
        else:
            pil.save(buf, "AVIF", quality=quality, speed=8)
        return buf.getvalue()

    if source_codec == "jpeg2000":
        raw = image.size
        ratios = sorted({max(1.0, raw / max(budget, 1) * f) for f in (1.0, 1.1, 1.25, 1.5, 2, 3, 5, 8, 13, 20)})
        for ratio in ratios:       # lowest ratio (best quality) first
            data = save(ratio)
            if len(data) <= budget:
                return data
        smallest = len(data)
    else:
        lo, hi, best = 0, 100, None
        while lo <= hi:
            mid = (lo + hi) // 2
            data = save(mid)
            if len(data) <= budget:
                best, lo = data, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best
        smallest = len(save(0))
    raise BudgetError(f"byte budget too small: {budget} bytes cannot hold a {source_codec} stream of this "
                      f"{image.shape[1]}x{image.shape[0]} image (the smallest is {smallest} bytes); "
                      f"use a higher MCS, a larger CBR or another source codec", smallest)


def decode_source(data: bytes, source_codec: str, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img.convert("RGB"))
    except Exception as err:  # Pillow raises many types for a bad stream
        raise CodecError(f"{source_codec} stream passed the CRC but does not decode: {err}") from err
    if pixels.shape != (height, width, 3):
        raise CodecError(f"{source_codec} stream decodes to {pixels.shape[1]}x{pixels.shape[0]}, "
                         f"header says {width}x{height}")
    return pixels


class SeparationCodec(DigitalCodec):
    """Pillow source coding on the digital pipeline; rate_index selects the MCS.

    Args:
        source_codec: 'jpeg2000', 'webp', 'avif', or 'best' (each image: the one
            with the highest PSNR that fits; the payload says which).
        cbr: channel uses per real pixel value (complex symbols = cbr * h * w * 3).
    """

    name = "separation"
    codec_id = SEPARATION_CODEC_ID
    variants = ("best", *SOURCE_CODECS)

    def __init__(self, source_codec: str = "best", cbr: float = 1 / 6, seed: int = 0x5E9):
        if source_codec not in self.variants:
            raise ValueError(f"source codec {source_codec!r} is not known; use one of {sorted(self.variants)}")
        super().__init__(cbr, seed)
        self.source_codec = source_codec
        self._streams: dict = {}
        self._last_source_codec = None

    @property
    def last_detail(self) -> str | None:
        """The source codec of the last image encoded."""
        return self._last_source_codec

    def source_stream(self, image: np.ndarray, budget: int) -> tuple[str, bytes]:
        """(source codec, stream) of at most budget bytes; cached, since a benchmark sends
        each image at several SNRs."""
        key = (hashlib.sha1(image.tobytes()).hexdigest(), image.shape, budget)
        if key not in self._streams:
            if len(self._streams) > 20000:
                self._streams.clear()
            try:
                self._streams[key] = self._source_stream(image, budget)
            except BudgetError as err:
                self._streams[key] = err
        if isinstance(self._streams[key], BudgetError):
            raise self._streams[key]
        return self._streams[key]

    def _source_stream(self, image: np.ndarray, budget: int) -> tuple[str, bytes]:
        if self.source_codec != "best":
            return self.source_codec, encode_source(image, self.source_codec, budget)
        from .metrics import psnr_db
        best, smallest = None, {}
        for name in SOURCE_CODECS:
            try:
                data = encode_source(image, name, budget)
            except BudgetError as err:
                smallest[name] = err.smallest
                continue
            score = psnr_db(image, decode_source(data, name, *image.shape[:2]))
            if best is None or score > best[0]:
                best = (score, name, data)
        if best is None:
            sizes = ", ".join(f"{name} {size}" for name, size in smallest.items())
            raise BudgetError(f"byte budget too small: {budget} bytes hold no source stream of this "
                              f"{image.shape[1]}x{image.shape[0]} image (smallest: {sizes} bytes); "
                              f"use a higher MCS or a larger CBR", min(smallest.values()))
        return best[1], best[2]

    def encode_payload(self, image: np.ndarray, capacity: int) -> bytes:
        budget = capacity - PAYLOAD_HEADER_BYTES
        if budget <= 0:
            h, w = image.shape[:2]
            raise ValueError(f"byte budget too small: the MCS carries {capacity} payload bytes for a {w}x{h} "
                             f"image, no more than the {PAYLOAD_HEADER_BYTES} bytes of the stream header; use "
                             "a higher MCS or a larger CBR")
        name, stream = self.source_stream(image, budget)
        self._last_source_codec = name
        return bytes([SOURCE_CODECS[name]]) + len(stream).to_bytes(3, "big") + stream

    def decode_payload(self, payload: bytes, height: int, width: int, steps: int = 0, seed: int = 0) -> np.ndarray:
        names = {v: k for k, v in SOURCE_CODECS.items()}
        if payload[0] not in names:
            raise CodecError(f"payload names source codec {payload[0]}, not one of {sorted(names)}")
        length = int.from_bytes(payload[1:4], "big")
        return decode_source(payload[4:4 + length], names[payload[0]], height, width)
