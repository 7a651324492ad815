"""The analog OFDM frame: numerology, header format, header FEC.

One place for the frame format. A frame on air is

    [sync word 1][sync word 2][header: HEADER_OFDM_SYMBOLS][payload: ceil(n/48) symbols]

Sync words are gr-digital's Schmidl-Cox pair. The header is 126 bits (110 bits of
fields + CRC-16/CCITT), convolutionally coded with gr-fec's K=7 rate-1/2 code
(terminated), sent twice (soft-combined at the receiver: the header must survive
0 dB, where the payload still decodes), interleaved over carriers, as BPSK. The payload carries the
encoder's complex symbols straight on the data carriers: never sliced.
"""
import ctypes
import secrets
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np
from gnuradio import digital, fec
from gnuradio.digital import ofdm_txrx

# --- numerology ------------------------------------------------------------

@dataclass(frozen=True)
class Numerology:
    """OFDM numerology; the defaults are gr-digital's 802.11a-like layout."""
    fft_len: int = 64
    cp_len: int = 16
    occupied_carriers: tuple = tuple(ofdm_txrx._def_occupied_carriers[0])
    pilot_carriers: tuple = tuple(ofdm_txrx._def_pilot_carriers[0])

    def __post_init__(self):
        if self.cp_len <= 0 or self.cp_len >= self.fft_len:
            raise ValueError(f"cp_len {self.cp_len} must be in 1..{self.fft_len - 1}")
        half = self.fft_len // 2
        for c in tuple(self.occupied_carriers) + tuple(self.pilot_carriers):
            if not -half <= c < half or c == 0:
                raise ValueError(f"carrier {c} outside -{half}..{half - 1} or on DC")
        if set(self.occupied_carriers) & set(self.pilot_carriers):
            raise ValueError("a carrier is both a data and a pilot carrier")

    @classmethod
    def of(cls, fft_len: int, cp_len: int, occupied_carriers=None, pilot_carriers=None) -> "Numerology":
        """A block's numerology: its parameters, gr-digital's carriers where they are None."""
        carriers = {k: tuple(v) for k, v in (("occupied_carriers", occupied_carriers),
                                               ("pilot_carriers", pilot_carriers)) if v is not None}
        return cls(fft_len=fft_len, cp_len=cp_len, **carriers)

    @property
    def n_data(self) -> int:
        return len(self.occupied_carriers)

    @property
    def symbol_len(self) -> int:
        return self.fft_len + self.cp_len

    def bins(self, carriers) -> np.ndarray:
        """Indices into an fftshift-ed (centred) FFT vector, as fft_vcc(shift=True) gives."""
        return np.asarray(carriers, dtype=int) + self.fft_len // 2

    @property
    def data_bins(self) -> np.ndarray:
        return self.bins(self.occupied_carriers)

    @property
    def pilot_bins(self) -> np.ndarray:
        return self.bins(self.pilot_carriers)

    @cached_property
    def sync_words(self):
        """(sync1, sync2) as centred fft_len vectors, identical to gr-digital's ofdm_tx.

        Computed once: gr-digital's helpers reseed numpy's global RNG, so the state
        is saved and restored around them.
        """
        occ, pil = (tuple(self.occupied_carriers),), (tuple(self.pilot_carriers),)
        state = np.random.get_state()
        try:
            return (np.asarray(ofdm_txrx._make_sync_word1(self.fft_len, occ, pil), dtype=np.complex64),
                    np.asarray(ofdm_txrx._make_sync_word2(self.fft_len, occ, pil), dtype=np.complex64))
        finally:
            np.random.set_state(state)

    @cached_property
    def pilot_symbols(self) -> np.ndarray:
        """[n_cycle, n_pilots] pilot values; symbol i after the sync words uses row i % n_cycle."""
        seq = np.asarray(ofdm_txrx._pilot_sym_scramble_seq, dtype=np.float32)
        base = np.array([1, 1, 1, -1] if len(self.pilot_carriers) == 4 else [1] * len(self.pilot_carriers))
        return (seq[:, None] * base[None, :]).astype(np.complex64)

    def payload_ofdm_symbols(self, payload_symbols: int) -> int:
        return -(-payload_symbols // self.n_data)

    def frame_samples(self, payload_symbols: int) -> int:
        n = 2 + HEADER_OFDM_SYMBOLS + self.payload_ofdm_symbols(payload_symbols)
        return n * self.symbol_len


# --- header ----------------------------------------------------------------

HEADER_VERSION = 2
# (name, bits); order is the bit order on air. 110 bits in all.
# session: drawn at random by each transmitter when it starts, so a receiver never
# merges two transmissions that reuse an image id (a restarted transmitter).
# user: the transmitter's user id (several transmitters heard by one receiver).
HEADER_FIELDS = (
    ("version", 4), ("session", 10), ("user", 3), ("image_id", 16), ("fragment_index", 12),
    ("fragment_count", 12), ("codec_id", 5), ("rate_index", 4), ("power_level", 4), ("refine_steps", 4),
    ("payload_symbols", 16), ("height_div4", 10), ("width_div4", 10),
)
SESSION_BITS = dict(HEADER_FIELDS)["session"]
MAX_USERS = 1 << dict(HEADER_FIELDS)["user"]
HEADER_INFO_BITS = sum(b for _, b in HEADER_FIELDS) + 16          # + CRC-16
_K, _POLYS = 7, [109, 79]                                          # the 802.11 code
HEADER_CODED_BITS = 2 * (HEADER_INFO_BITS + _K - 1)                # terminated trellis
HEADER_REPEAT = 2                                                  # coded header sent twice, soft-combined
HEADER_OFDM_SYMBOLS = 11                                           # 528 BPSK slots at 48 carriers


# Header codec id 0 is never a codec: it marks a control frame, whose rate_index
# field says which. The end-of-stream frame follows a transmitter's last image
# (image_id: the id the next image would have had), so a receiver knows the
# transmitter has finished.
CONTROL_CODEC_ID = 0
END_OF_STREAM = 0
CONTROL_PAYLOAD_SYMBOLS = 48


@dataclass
class FrameHeader:
    image_id: int
    fragment_index: int
    fragment_count: int
    codec_id: int
    rate_index: int
    power_level: int
    refine_steps: int
    payload_symbols: int
    height: int
    width: int
    session: int = 0
    user: int = 0

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


HEADER_DEFAULTS = ("session", "user")     # FrameHeader fields a fragment's metadata may leave out (0)


def end_of_stream_meta(next_image_id: int, session: int = 0, user: int = 0) -> dict:
    """Header fields of the end-of-stream control frame."""
    return {"image_id": int(next_image_id) % 65536, "fragment_index": 0, "fragment_count": 1,
            "codec_id": CONTROL_CODEC_ID, "rate_index": END_OF_STREAM, "power_level": 0, "refine_steps": 0,
            "payload_symbols": CONTROL_PAYLOAD_SYMBOLS, "height": 0, "width": 0, "session": int(session),
            "user": int(user)}


def new_session() -> int:
    """A transmitter's session id: random, so a restart is told from the run before it."""
    return secrets.randbelow(1 << SESSION_BITS)


def control_payload() -> np.ndarray:
    """Fixed unit-power QPSK payload of a control frame."""
    bits = np.random.default_rng(0xE05).integers(0, 4, CONTROL_PAYLOAD_SYMBOLS)
    return np.exp(1j * (np.pi / 4 + np.pi / 2 * bits)).astype(np.complex64)


def is_end_of_stream(meta: dict) -> bool:
    return int(meta.get("codec_id", -1)) == CONTROL_CODEC_ID and int(meta.get("rate_index", -1)) == END_OF_STREAM


class HeaderError(ValueError):
    pass


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _capsule(array: np.ndarray):
    """gr-fec's generic_work takes raw buffers; hand it the numpy array's memory."""
    return _capsule_new(array.ctypes.data, None, None)


class HeaderCodec:
    """Packs, protects and recovers frame headers for a given numerology."""

    def __init__(self, numerology: Numerology = Numerology()):
        self.numerology = numerology
        self.slots = HEADER_OFDM_SYMBOLS * numerology.n_data
        if self.slots < HEADER_REPEAT * HEADER_CODED_BITS:
            raise ValueError(f"{numerology.n_data} data carriers leave {self.slots} header slots, "
                             f"{HEADER_REPEAT * HEADER_CODED_BITS} needed")
        self._crc = digital.crc(16, 0x1021, 0xFFFF, 0, False, False)
        self._encoder = fec.cc_encoder.make(HEADER_INFO_BITS, _K, 2, _POLYS, 0, fec.CC_TERMINATED, False)
        self._decoder = fec.cc_decoder.make(HEADER_INFO_BITS, _K, 2, _POLYS, 0, -1, fec.CC_TERMINATED, False)
        # Fixed pseudo-random interleaver spreads coded bits over carriers and symbols.
        self.interleaver = np.random.default_rng(0x65C).permutation(self.slots)

    def _crc16(self, bits: np.ndarray) -> int:
        return int(self._crc.compute(list(np.packbits(bits).tobytes())))

    def encode(self, header: FrameHeader) -> np.ndarray:
        """FrameHeader -> BPSK symbols (complex64, length HEADER_OFDM_SYMBOLS * n_data)."""
        values = header.as_dict()
        values["version"] = HEADER_VERSION
        values["fragment_count"] = header.fragment_count - 1
        for key, size in (("height", "height_div4"), ("width", "width_div4")):
            if values[key] % 4:
                raise HeaderError(f"{key} {values[key]} is not a multiple of 4")
            values[size] = values.pop(key) // 4
        bits = []
        for name, size in HEADER_FIELDS:
            value = int(values[name])
            if not 0 <= value < (1 << size):
                raise HeaderError(f"header field {name}={value} does not fit in {size} bits")
            bits.extend((value >> i) & 1 for i in range(size - 1, -1, -1))
        bits = np.asarray(bits, dtype=np.uint8)
        crc = self._crc16(bits)
        bits = np.concatenate([bits, [(crc >> i) & 1 for i in range(15, -1, -1)]]).astype(np.uint8)
        coded = np.zeros(self._encoder.get_output_size(), dtype=np.uint8)
        self._encoder.generic_work(_capsule(bits), _capsule(coded))
        slots = np.zeros(self.slots, dtype=np.uint8)
        slots[:HEADER_REPEAT * coded.size] = np.tile(coded, HEADER_REPEAT)
        on_air = np.empty_like(slots)
        on_air[self.interleaver] = slots
        return (1.0 - 2.0 * on_air).astype(np.complex64)  # bit 0 -> +1, bit 1 -> -1

    @cached_property
    def _linear_maps(self):
        """The header's CRC and its code are linear over GF(2): the CRC of 110 bits is crc(0) xor the
        CRCs (less crc(0)) of its set bits; the coded and interleaved slots of 126 bits, the xor of each
        set bit's slots. Both taken once from gr-digital's CRC and gr-fec's encoder, bit by bit, so a
        batch of headers is checked and re-encoded by xor-reductions."""
        n_fields = HEADER_INFO_BITS - 16
        zero = self._crc16(np.zeros(n_fields, np.uint8))
        crc = np.array([self._crc16(np.eye(n_fields, dtype=np.uint8)[i]) ^ zero for i in range(n_fields)], np.int64)
        slots = np.zeros((HEADER_INFO_BITS, self.slots), np.uint8)
        coded = np.zeros(self._encoder.get_output_size(), dtype=np.uint8)
        units = np.eye(HEADER_INFO_BITS, dtype=np.uint8)     # kept alive: the capsules hold raw pointers
        for i in range(HEADER_INFO_BITS):
            self._encoder.generic_work(_capsule(units[i]), _capsule(coded))
            repeated = np.zeros(self.slots, dtype=np.uint8)
            repeated[:HEADER_REPEAT * coded.size] = np.tile(coded, HEADER_REPEAT)
            slots[i, self.interleaver] = repeated
        weights = np.zeros((n_fields, len(HEADER_FIELDS)), np.int64)
        pos = 0
        for j, (_, size) in enumerate(HEADER_FIELDS):
            weights[pos:pos + size, j] = 1 << np.arange(size - 1, -1, -1)
            pos += size
        return zero, crc, np.packbits(slots, axis=1), weights

    @staticmethod
    def _xor_rows(bits: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For each row of bits [k, n] (0/1), the xor of the rows [n, ...] (integers) its ones select."""
        return np.bitwise_xor.reduce(np.where(bits.astype(bool)[(...,) + (None,) * (rows.ndim - 1)], rows, 0),
                                     axis=1)

    def decode(self, soft: np.ndarray) -> FrameHeader:
        """Soft BPSK values (equalized real parts scaled as LLRs, + means bit 0) -> FrameHeader.

        Raises HeaderError when the CRC fails.
        """
        headers, bits = self.decode_batch(np.asarray(soft, dtype=np.float32)[None])
        if isinstance(headers[0], HeaderError):
            raise headers[0]
        return headers[0]

    def decode_batch(self, soft: np.ndarray):
        """decode of k headers' soft values [k, slots] -> (k FrameHeaders or HeaderErrors, the decoded
        bits [k, HEADER_INFO_BITS] for symbols())."""
        soft = np.asarray(soft, dtype=np.float32)[:, self.interleaver]
        soft = soft[:, :HEADER_REPEAT * HEADER_CODED_BITS].reshape(len(soft), HEADER_REPEAT, -1).sum(axis=1)
        # cc_decoder wants unsigned chars, 128 = erasure, larger = bit 1.
        quantized = np.ascontiguousarray(np.clip(np.round(128.0 - soft * 32.0), 0, 255).astype(np.uint8))
        bits = np.zeros((len(soft), self._decoder.get_output_size()), dtype=np.uint8)
        for row, out in zip(quantized, bits):
            self._decoder.generic_work(_capsule(row), _capsule(out))
        crc_zero, crc_map, _, weights = self._linear_maps
        payload = bits[:, :-16]
        received_crc = bits[:, -16:].astype(np.int64) @ (1 << np.arange(15, -1, -1))
        crc_ok = (crc_zero ^ self._xor_rows(payload, crc_map)) == received_crc
        values = np.sum(payload.astype(np.int64)[:, :, None] * weights[None], axis=1)
        names = [name for name, _ in HEADER_FIELDS]
        headers = []
        for ok, row in zip(crc_ok, values.tolist()):
            field = dict(zip(names, row))
            if not ok:
                headers.append(HeaderError("header CRC mismatch"))
            elif field["version"] != HEADER_VERSION:
                headers.append(HeaderError("unknown header version"))
            else:
                headers.append(FrameHeader(
                    image_id=field["image_id"], fragment_index=field["fragment_index"],
                    fragment_count=field["fragment_count"] + 1, codec_id=field["codec_id"],
                    rate_index=field["rate_index"], power_level=field["power_level"],
                    refine_steps=field["refine_steps"], payload_symbols=field["payload_symbols"],
                    height=4 * field["height_div4"], width=4 * field["width_div4"],
                    session=field["session"], user=field["user"]))
        return headers, bits

    def symbols(self, bits: np.ndarray) -> np.ndarray:
        """The BPSK header symbols [k, slots] of decoded header bits [k, HEADER_INFO_BITS] (decode_batch's):
        what encode() sends for those headers."""
        slot_map = self._linear_maps[2]
        on_air = np.unpackbits(self._xor_rows(np.asarray(bits), slot_map), axis=1, count=self.slots)
        return (1.0 - 2.0 * on_air).astype(np.complex64)


# --- transmit power levels ---------------------------------------------------

POWER_STEP_DB = 2.0     # power level p transmits at -p * POWER_STEP_DB dB (level 0 = full power)


def power_gain(power_level: int) -> float:
    """Linear power gain of a power level relative to full power."""
    return 10.0 ** (-POWER_STEP_DB * power_level / 10.0)
