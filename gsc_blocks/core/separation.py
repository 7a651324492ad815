"""The classical separation baseline: image codec + CRC + LDPC + QAM.

It fills exactly the channel uses a semantic codec gets (the same CBR), so
both travel in the same OFDM frames and are compared side by side. The pieces
come from kept libraries: Pillow's JPEG 2000, WebP and AVIF encoders, zlib's
CRC-32, gr-fec's LDPC encoder (parity-check matrix form) and sum-product
decoder on the alist codes GNU Radio ships, and gr-digital's Gray-mapped
constellations. numpy glues them: byte budget search, bit interleaving and
max-log soft demapping.

Payload layout (bytes): source codec id (1), stream length (3), stream,
zero padding to the budget, CRC-32 of everything before it (4).
"""
from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .codec import CodecError

SEPARATION_CODEC_ID = 15           # header codec id (4 bits); learned codecs take theirs from their cards
OVERHEAD_BYTES = 8                 # codec id + length + CRC-32
SOURCE_CODECS = {"jpeg2000": 1, "webp": 2, "avif": 3}
LDPC_DIR = Path("/usr/share/gnuradio/fec/ldpc")
LLR_CLIP = 20.0                    # gr-fec's decoder works on likelihood ratios: keep exp() finite

# gr-fec's shipped codes (alist file, gap of its approximate lower-triangular form),
# longest first in each family.
CODE_FAMILIES = {
    "1/4": [("n_0512_k_0130_gap_21.alist", 21)],
    "2/5": [("n_1100_k_0442_gap_24.alist", 24), ("n_0500_k_0202_gap_11.alist", 11)],
    "1/2": [("n_1800_k_0902_gap_28.alist", 28), ("n_0300_k_0152_gap_03.alist", 3)],
}


@dataclass(frozen=True)
class MCS:
    name: str
    bits_per_symbol: int
    code: str        # CODE_FAMILIES key


MCS_TABLE = [
    MCS("bpsk-1/4", 1, "1/4"), MCS("bpsk-1/2", 1, "1/2"),
    MCS("qpsk-2/5", 2, "2/5"), MCS("qpsk-1/2", 2, "1/2"),
    MCS("16qam-2/5", 4, "2/5"), MCS("16qam-1/2", 4, "1/2"),
    MCS("64qam-2/5", 6, "2/5"), MCS("64qam-1/2", 6, "1/2"),
]


def mcs_index(name_or_index) -> int:
    """An MCS by table index or name (e.g. '16qam-1/2')."""
    names = [m.name for m in MCS_TABLE]
    if isinstance(name_or_index, (int, np.integer)) or str(name_or_index).isdigit():
        index = int(name_or_index)
        if 0 <= index < len(MCS_TABLE):
            return index
    elif str(name_or_index) in names:
        return names.index(str(name_or_index))
    raise ValueError(f"MCS {name_or_index!r} is not known; use an index 0..{len(MCS_TABLE) - 1} or one of {names}")


class _LDPCCode:
    """One gr-fec code: par_mtrx encoder and sum-product decoder, driven from numpy."""

    def __init__(self, alist: str, gap: int):
        from gnuradio import fec
        path = LDPC_DIR / alist
        if not path.is_file():
            raise CodecError(f"LDPC code file {path} is missing: install GNU Radio's gr-fec (gnuradio package)")
        self.path = str(path)
        self._H = fec.ldpc_H_matrix(self.path, gap)
        self._encoder = fec.ldpc_par_mtrx_encoder.make_H(self._H)
        # The decoder turns its input x into the likelihood ratio exp(x / (2 sigma^2)):
        # with sigma^2 = 1/2, x = -LLR (LLR = log P(0)/P(1)) is exact.
        self._decoder = fec.ldpc_decoder.make(self.path, float(np.sqrt(0.5)), 50)
        self.k = int(self._encoder.get_input_size())
        self.n = int(self._encoder.get_output_size())

    def encode(self, bits: np.ndarray) -> np.ndarray:
        from .frame import _capsule
        info = np.ascontiguousarray(bits, np.uint8)
        coded = np.zeros(self.n, np.uint8)
        self._encoder.generic_work(_capsule(info), _capsule(coded))
        return coded

    def decode(self, llr: np.ndarray) -> np.ndarray:
        from .frame import _capsule
        soft = np.ascontiguousarray(-np.clip(llr, -LLR_CLIP, LLR_CLIP), np.float32)
        info = np.zeros(self.k, np.uint8)
        self._decoder.generic_work(_capsule(soft), _capsule(info))
        return info


class _Modem:
    """Gray-mapped unit-power constellation from gr-digital, with max-log LLRs."""

    def __init__(self, bits_per_symbol: int):
        from gnuradio import digital
        from gnuradio.digital import qam
        order = 1 << bits_per_symbol
        const = {1: digital.constellation_bpsk, 2: digital.constellation_qpsk}.get(bits_per_symbol)
        const = const() if const else qam.qam_constellation(order, False, "gray")
        points = np.array([const.map_to_points_v(v)[0] for v in range(order)], np.complex128)
        self.points = (points / np.sqrt(np.mean(np.abs(points) ** 2))).astype(np.complex64)
        self.bits_per_symbol = bits_per_symbol
        self.labels = ((np.arange(order)[:, None] >> np.arange(bits_per_symbol)[::-1]) & 1).astype(bool)

    def modulate(self, bits: np.ndarray) -> np.ndarray:
        groups = bits.reshape(-1, self.bits_per_symbol).astype(np.int64)
        values = groups @ (1 << np.arange(self.bits_per_symbol)[::-1])
        return self.points[values]

    def llr(self, symbols: np.ndarray, noise_var: float, chunk: int = 65536) -> np.ndarray:
        """log P(bit=0)/P(bit=1), max-log, per bit in transmit order."""
        out = np.empty((symbols.size, self.bits_per_symbol), np.float32)
        for start in range(0, symbols.size, chunk):
            y = symbols[start:start + chunk, None]
            metric = np.abs(y - self.points[None]) ** 2 / max(noise_var, 1e-9)
            for b in range(self.bits_per_symbol):
                ones = self.labels[:, b]
                out[start:start + chunk, b] = metric[:, ones].min(1) - metric[:, ~ones].min(1)
        return out.reshape(-1)


def _plan(coded_bits: int, family: list) -> list[tuple[str, int]]:
    """Codewords of one family that fit coded_bits, longest codes first."""
    plan, left = [], coded_bits
    for alist, gap in family:
        n = int(alist.split("_")[1])
        count = left // n
        plan += [(alist, gap)] * count
        left -= count * n
    return plan


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


class SeparationCodec:
    """Same interface as JSCCCodec: encode(image, snr_db, rate_index) -> symbols,
    decode(symbols, h, w, snr_db, rate_index) -> pixels. rate_index selects the MCS.

    Args:
        source_codec: 'jpeg2000', 'webp', 'avif', or 'best' (each image: the one
            with the highest PSNR that fits; the stream says which).
        cbr: channel uses per real pixel value (complex symbols = cbr * h * w * 3).
    """

    name = "separation"
    codec_id = SEPARATION_CODEC_ID

    def __init__(self, source_codec: str = "best", cbr: float = 1 / 6, seed: int = 0x5E9):
        if source_codec != "best" and source_codec not in SOURCE_CODECS:
            raise ValueError(f"source codec {source_codec!r} is not known; "
                             f"use one of {sorted(SOURCE_CODECS) + ['best']}")
        self.source_codec = source_codec
        self.cbr = float(cbr)
        self.seed = seed
        self.providers = ["numpy", "gr-fec"]
        self._codes: dict[str, _LDPCCode] = {}
        self._modems: dict[int, _Modem] = {}
        self._streams: dict = {}
        self.last_source_codec = None

    # --- sizes -------------------------------------------------------------
    def check_size(self, height: int, width: int):
        if height < 8 or width < 8:
            raise ValueError(f"image is {width}x{height}: separation needs at least 8x8")

    def n_symbols(self, height: int, width: int) -> int:
        return int(round(self.cbr * height * width * 3))

    def symbol_count(self, height: int, width: int, rate_index: int = 0) -> int:
        """Channel symbols per image: the same for every MCS (the MCS sets the bits they carry)."""
        return self.n_symbols(height, width)

    def latent_shape(self, height: int, width: int):
        from .codec import LatentShape
        return LatentShape(2, 1, self.n_symbols(height, width))

    def _layout(self, height: int, width: int, rate_index: int):
        mcs = MCS_TABLE[mcs_index(rate_index)]
        n_sym = self.n_symbols(height, width)
        plan = _plan(n_sym * mcs.bits_per_symbol, CODE_FAMILIES[mcs.code])
        info_bits = sum(self._code(a, g).k for a, g in plan)
        return mcs, n_sym, plan, info_bits // 8

    def payload_bytes(self, height: int, width: int, rate_index: int) -> int:
        """Bytes of the whole payload (source stream + 8 bytes of framing) at this MCS."""
        return self._layout(height, width, rate_index)[3]

    def _code(self, alist, gap) -> _LDPCCode:
        if alist not in self._codes:
            self._codes[alist] = _LDPCCode(alist, gap)
        return self._codes[alist]

    def _modem(self, bits_per_symbol) -> _Modem:
        if bits_per_symbol not in self._modems:
            self._modems[bits_per_symbol] = _Modem(bits_per_symbol)
        return self._modems[bits_per_symbol]

    def _interleaver(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed + n).permutation(n)

    def _scrambler(self, n: int) -> np.ndarray:
        return np.random.default_rng(~self.seed & 0xFFFF).integers(0, 2, n).astype(np.uint8)

    # --- transmit ----------------------------------------------------------
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

    def encode(self, image: np.ndarray, snr_db: float = 0.0, rate_index: int = 0) -> np.ndarray:
        h, w = image.shape[:2]
        self.check_size(h, w)
        mcs, n_sym, plan, payload = self._layout(h, w, rate_index)
        budget = payload - OVERHEAD_BYTES
        if budget <= 0:
            raise ValueError(f"byte budget too small: {mcs.name} carries {payload} bytes for a {w}x{h} image, "
                             f"less than the {OVERHEAD_BYTES} bytes of framing; use a higher MCS or a larger CBR")
        name, stream = self.source_stream(image, budget)
        self.last_source_codec = name
        body = bytes([SOURCE_CODECS[name]]) + len(stream).to_bytes(3, "big") + stream
        body += bytes(payload - 4 - len(body))
        data = body + zlib.crc32(body).to_bytes(4, "big")
        bits = np.unpackbits(np.frombuffer(data, np.uint8))
        coded, at = [], 0
        for alist, gap in plan:
            code = self._code(alist, gap)
            chunk = np.zeros(code.k, np.uint8)
            part = bits[at:at + code.k]
            chunk[:part.size] = part
            coded.append(code.encode(chunk))
            at += code.k
        coded = np.concatenate(coded)
        all_bits = np.zeros(n_sym * mcs.bits_per_symbol, np.uint8)
        all_bits[:coded.size] = coded        # channel uses left over after whole codewords carry zeros
        perm = self._interleaver(all_bits.size)
        # Scramble so zero padding does not pile onto one constellation point.
        tx_bits = all_bits[perm] ^ self._scrambler(all_bits.size)
        return self._modem(mcs.bits_per_symbol).modulate(tx_bits).astype(np.complex64)

    # --- receive -----------------------------------------------------------
    def decode(self, symbols: np.ndarray, height: int, width: int, snr_db: float, rate_index: int = 0) -> np.ndarray:
        mcs, n_sym, plan, payload = self._layout(height, width, rate_index)
        if symbols.size != n_sym:
            raise ValueError(f"{symbols.size} symbols do not make a {width}x{height} image ({n_sym} expected)")
        noise_var = 10 ** (-float(snr_db) / 10)
        llr_tx_order = self._modem(mcs.bits_per_symbol).llr(np.asarray(symbols, np.complex64), noise_var)
        llr_tx_order *= 1 - 2 * self._scrambler(llr_tx_order.size).astype(np.float32)
        llr = np.empty_like(llr_tx_order)
        llr[self._interleaver(llr.size)] = llr_tx_order
        info, at = [], 0
        for alist, gap in plan:
            code = self._code(alist, gap)
            info.append(code.decode(llr[at:at + code.n]))
            at += code.n
        data = np.packbits(np.concatenate(info))[:payload].tobytes()
        body, crc = data[:-4], int.from_bytes(data[-4:], "big")
        if zlib.crc32(body) != crc:
            raise CodecError(f"CRC failed after LDPC decoding ({mcs.name} at an estimated {snr_db:.1f} dB)")
        names = {v: k for k, v in SOURCE_CODECS.items()}
        if body[0] not in names:
            raise CodecError(f"payload names source codec {body[0]}, not one of {sorted(names)}")
        length = int.from_bytes(body[1:4], "big")
        return decode_source(body[4:4 + length], names[body[0]], height, width)
