"""The codec interface: what every codec declares, and what blocks, benchmarks and
the controller may ask of it.

Two families fill the same OFDM frames:
- analog (ANALOG): a learned JSCC encoder hands complex symbols straight to the
  payload, and its decoder takes the equalized symbols (core/jscc.py);
- digital (DIGITAL): a payload coder hands bytes to one shared bit pipeline (CRC,
  LDPC, interleaving, QAM; core/digital.py), which turns them into symbols.

A codec declares its family, its rates (a count, and a label per rate index such
as 'cbr 1/12' or 'qpsk-1/2') and its image-size rule. core/registry.py maps codec
names and header codec ids to codecs.
"""
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .models import CodecError  # noqa: F401 (the codecs' error, raised through this interface)

ANALOG = "analog"
DIGITAL = "digital"


@dataclass(frozen=True)
class LatentShape:
    channels: int   # real channels (2 x complex)
    h: int
    w: int

    @property
    def n_symbols(self) -> int:
        return self.channels // 2 * self.h * self.w


class Codec:
    """Base of every codec.

    Subclasses set name, codec_id (the header's 4-bit codec field), family, size_multiple
    and min_side, and implement rate_labels, symbol_count, encode and decode.
    encode(image uint8 HxWx3, snr_db, rate_index) -> complex64 symbols of unit average power;
    decode(symbols, height, width, snr_db, rate_index) -> uint8 HxWx3. Both raise
    ValueError for a bad input or rate, and CodecError when a payload does not decode.
    """

    name: str = ""
    codec_id: int = -1
    family: str = ANALOG
    size_multiple: int = 1
    min_side: int = 8
    providers: list = []
    regenerates: bool = False   # decodes with its own diffusion model: the header's refine_steps are its steps

    # --- rates ---------------------------------------------------------------
    @property
    def rate_labels(self) -> list[str]:
        """One label per rate index, e.g. 'cbr 1/6' or 'qpsk-1/2'."""
        raise NotImplementedError

    @property
    def rate_count(self) -> int:
        return len(self.rate_labels)

    def check_rate(self, rate_index: int) -> int:
        if not 0 <= int(rate_index) < self.rate_count:
            allowed = "0" if self.rate_count == 1 else f"0 to {self.rate_count - 1}"
            raise ValueError(f"rate_index {rate_index}: {self.name} has rate indexes {allowed} "
                             f"({', '.join(self.rate_labels)})")
        return int(rate_index)

    def rate_index_for(self, label) -> int:
        """A rate index by its label, the label's value alone ('1/12' for 'cbr 1/12'), or its index."""
        text = str(label).strip()
        for index, full in enumerate(self.rate_labels):
            if text in (full, full.split(" ", 1)[-1]):
                return index
        if text.isdigit() and int(text) < self.rate_count:
            return int(text)
        raise ValueError(f"rate {label!r}: {self.name} offers {', '.join(self.rate_labels)}")

    def cbr_at(self, rate_index: int) -> float:
        """Channel uses per real source value at rate_index."""
        raise NotImplementedError

    def rate_record(self, rate_index: int, height: int, width: int) -> dict:
        """What a benchmark records of a rate index (label, and what it means for this family)."""
        return {"rate_index": int(rate_index), "rate": self.rate_labels[int(rate_index)]}

    # --- sizes ---------------------------------------------------------------
    def check_size(self, height: int, width: int):
        """The image-size rule: sides that are multiples of size_multiple and at least min_side."""
        m, low = self.size_multiple, max(self.min_side, self.size_multiple)
        if height % m or width % m or height < low or width < low:
            rule = f"multiples of {m} and at least {low}" if m > 1 else f"at least {low}"
            raise ValueError(f"image is {width}x{height}: {self.name} needs width and height that are "
                             f"{rule} (crop or pad the image)")

    def symbol_count(self, height: int, width: int, rate_index: int = 0) -> int:
        """Channel symbols of one image at rate_index."""
        raise NotImplementedError

    # --- coding --------------------------------------------------------------
    def encode(self, image: np.ndarray, snr_db: float, rate_index: int = 0) -> np.ndarray:
        raise NotImplementedError

    batch_encodes = False     # encode_batch runs several images at once (not one encode each)

    def encode_batch(self, images: np.ndarray, snr_db: float, rate_index: int = 0) -> list:
        """Images of one size (B x H x W x 3) -> one symbol array each."""
        return [self.encode(image, snr_db, rate_index) for image in images]

    def decode(self, symbols: np.ndarray, height: int, width: int, snr_db: float,
               rate_index: int = 0) -> np.ndarray:
        raise NotImplementedError

    @property
    def last_detail(self) -> str | None:
        """What the last encode chose that its rate does not say (a digital codec's payload
        format, say), or None."""
        return None

    def model_files(self) -> dict:
        """{model name: {role: SHA-256}} of the model files this codec runs."""
        return {}


def cbr_fraction(value) -> Fraction:
    return Fraction(str(value)).limit_denominator(1000)
