"""The digital family's shared bit pipeline: bytes -> CRC-32 -> LDPC -> interleaver ->
scrambler -> Gray QAM symbols, and back with soft decisions.

A digital codec is a payload coder on top: it turns an image into at most
`capacity` bytes and back, and DigitalCodec does the rest. The rate index is
the MCS (modulation and LDPC code rate); every MCS fills the same channel
uses (the codec's CBR), so a higher MCS carries more bytes. The pieces come
from kept libraries: zlib's CRC-32, gr-fec's LDPC encoder (parity-check matrix
form) and sum-product decoder on the alist codes GNU Radio ships, and
gr-digital's Gray-mapped constellations. numpy glues them: bit interleaving,
scrambling and max-log soft demapping.

Bytes on air: the coder's payload, zero padding to the capacity, CRC-32 of
both (4 bytes).
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .codec import DIGITAL, Codec
from .models import CodecError

CRC_BYTES = 4
SENT_CACHE = 256          # transmit outputs kept (a CIFAR image at 16-QAM: 1 KiB; CamVid at CBR 1/6: 48 KiB)
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


class LDPCCode:
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
        from .frame import _capsule as capsule
        info = np.ascontiguousarray(bits, np.uint8)
        coded = np.zeros(self.n, np.uint8)
        self._encoder.generic_work(capsule(info), capsule(coded))
        return coded

    def decode(self, llr: np.ndarray) -> np.ndarray:
        from .frame import _capsule as capsule
        soft = np.ascontiguousarray(-np.clip(llr, -LLR_CLIP, LLR_CLIP), np.float32)
        info = np.zeros(self.k, np.uint8)
        self._decoder.generic_work(capsule(soft), capsule(info))
        return info


class Modem:
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


class BitPipeline:
    """CRC-32 + LDPC + interleaving + scrambling + QAM over n_symbols channel uses."""

    def __init__(self, seed: int = 0x5E9):
        self.seed = seed
        self._codes: dict[str, LDPCCode] = {}
        self._modems: dict[int, Modem] = {}
        self._sent: OrderedDict = OrderedDict()     # transmit's last outputs: benchmarks send an image at many SNRs

    def _code(self, alist, gap) -> LDPCCode:
        if alist not in self._codes:
            self._codes[alist] = LDPCCode(alist, gap)
        return self._codes[alist]

    def _modem(self, bits_per_symbol) -> Modem:
        if bits_per_symbol not in self._modems:
            self._modems[bits_per_symbol] = Modem(bits_per_symbol)
        return self._modems[bits_per_symbol]

    def _interleaver(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed + n).permutation(n)

    def _scrambler(self, n: int) -> np.ndarray:
        return np.random.default_rng(~self.seed & 0xFFFF).integers(0, 2, n).astype(np.uint8)

    def layout(self, n_symbols: int, mcs_index_: int):
        """(MCS, codeword plan, bytes the codewords carry, CRC included)."""
        mcs = MCS_TABLE[mcs_index(mcs_index_)]
        plan = _plan(n_symbols * mcs.bits_per_symbol, CODE_FAMILIES[mcs.code])
        info_bits = sum(self._code(a, g).k for a, g in plan)
        return mcs, plan, info_bits // 8

    def capacity(self, n_symbols: int, mcs_index_: int) -> int:
        """Payload bytes that fit in n_symbols at this MCS (the CRC's bytes left out)."""
        return self.layout(n_symbols, mcs_index_)[2] - CRC_BYTES

    def transmit(self, payload: bytes, n_symbols: int, mcs_index_: int) -> np.ndarray:
        key = (bytes(payload), n_symbols, mcs_index(mcs_index_))
        if key in self._sent:
            self._sent.move_to_end(key)
            return self._sent[key].copy()
        symbols = self._transmit(payload, n_symbols, mcs_index_)
        self._sent[key] = symbols.copy()
        if len(self._sent) > SENT_CACHE:
            self._sent.popitem(last=False)
        return symbols

    def _transmit(self, payload: bytes, n_symbols: int, mcs_index_: int) -> np.ndarray:
        mcs, plan, total = self.layout(n_symbols, mcs_index_)
        if len(payload) > total - CRC_BYTES:
            raise ValueError(f"{len(payload)} payload bytes exceed the {total - CRC_BYTES} that {mcs.name} "
                             f"carries in {n_symbols} symbols")
        body = bytes(payload) + bytes(total - CRC_BYTES - len(payload))
        data = body + zlib.crc32(body).to_bytes(CRC_BYTES, "big")
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
        all_bits = np.zeros(n_symbols * mcs.bits_per_symbol, np.uint8)
        all_bits[:coded.size] = coded        # channel uses left over after whole codewords carry zeros
        perm = self._interleaver(all_bits.size)
        # Scramble so zero padding does not pile onto one constellation point.
        tx_bits = all_bits[perm] ^ self._scrambler(all_bits.size)
        return self._modem(mcs.bits_per_symbol).modulate(tx_bits).astype(np.complex64)

    def receive(self, symbols: np.ndarray, snr_db: float, mcs_index_: int, check: bool = True) -> bytes:
        """Equalized symbols -> the payload bytes with their zero padding; CodecError when the CRC fails
        (check=False: the bytes as decoded, for a payload that carries a CRC per stream)."""
        mcs, plan, total = self.layout(symbols.size, mcs_index_)
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
        data = np.packbits(np.concatenate(info))[:total].tobytes()
        body, crc = data[:-CRC_BYTES], int.from_bytes(data[-CRC_BYTES:], "big")
        if check and zlib.crc32(body) != crc:
            raise CodecError(f"CRC failed after LDPC decoding ({mcs.name} at an estimated {snr_db:.1f} dB)")
        return body


class DigitalCodec(Codec):
    """A payload coder on the shared bit pipeline; rate index = MCS.

    Subclasses set name, codec_id and cbr, and implement encode_payload(image,
    capacity) -> bytes (at most capacity) and decode_payload(bytes, height, width,
    steps, seed) -> image; the bytes come back with the pipeline's zero padding
    after them. A codec with own_crcs checks a CRC per stream of its payload and
    gets the bytes even when the pipeline's CRC fails (a damaged stream names
    itself; damage in the padding loses nothing). A codec that regenerates takes
    the frame header's refine_steps as its sampling steps.
    """

    family = DIGITAL
    own_crcs = False

    def __init__(self, cbr: float = 1 / 6, seed: int = 0x5E9):
        self.cbr = float(cbr)
        self.pipeline = BitPipeline(seed)
        self.providers = ["numpy", "gr-fec"]

    @classmethod
    def create(cls, variant: str, models_dir=None, options: dict | None = None) -> "DigitalCodec":
        """The codec the registry makes for a name's variant ('webp' of 'separation-webp'); options:
        cbr (channel uses per pixel value)."""
        cbr = float((options or {}).get("cbr") or 1 / 6)
        return cls(variant, cbr=cbr) if variant else cls(cbr=cbr)

    @property
    def rate_labels(self) -> list[str]:
        return [m.name for m in MCS_TABLE]

    def rate_index_for(self, label) -> int:
        return mcs_index(label)

    def cbr_at(self, rate_index: int) -> float:
        self.check_rate(rate_index)
        return self.cbr

    def n_symbols(self, height: int, width: int) -> int:
        return int(round(self.cbr * height * width * 3))

    def symbol_count(self, height: int, width: int, rate_index: int = 0) -> int:
        """Channel symbols per image: the same for every MCS (the MCS sets the bits they carry)."""
        return self.n_symbols(height, width)

    def capacity(self, height: int, width: int, rate_index: int) -> int:
        """Bytes the payload coder may use for one image at this MCS."""
        return self.pipeline.capacity(self.n_symbols(height, width), rate_index)

    def rate_record(self, rate_index: int, height: int, width: int) -> dict:
        return {"mcs": MCS_TABLE[rate_index].name, "rate_index": int(rate_index),
                "payload_bytes": self.capacity(height, width, rate_index) + CRC_BYTES}

    def encode_payload(self, image: np.ndarray, capacity: int) -> bytes:
        raise NotImplementedError

    def decode_payload(self, payload: bytes, height: int, width: int, steps: int = 0, seed: int = 0) -> np.ndarray:
        raise NotImplementedError

    def encode(self, image: np.ndarray, snr_db: float = 0.0, rate_index: int = 0) -> np.ndarray:
        h, w = image.shape[:2]
        self.check_size(h, w)
        self.check_rate(rate_index)
        n_sym = self.n_symbols(h, w)
        payload = self.encode_payload(image, self.pipeline.capacity(n_sym, rate_index))
        return self.pipeline.transmit(payload, n_sym, rate_index)

    def decode(self, symbols: np.ndarray, height: int, width: int, snr_db: float, rate_index: int = 0,
               steps: int = 0, seed: int = 0) -> np.ndarray:
        n_sym = self.n_symbols(height, width)
        if symbols.size != n_sym:
            raise ValueError(f"{symbols.size} symbols do not make a {width}x{height} image ({n_sym} expected)")
        self.check_rate(rate_index)
        payload = self.pipeline.receive(symbols, snr_db, rate_index, check=not self.own_crcs)
        return self.decode_payload(payload, height, width, steps, seed)
