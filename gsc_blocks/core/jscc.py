"""The analog family: learned JSCC codecs run with ONNX Runtime (models/<name>/card.json)."""
from fractions import Fraction

import numpy as np

from .codec import ANALOG, Codec, LatentShape, cbr_fraction
from .models import check_card, load_card, verified_session


class JSCCCodec(Codec):
    """Encoder/decoder pair of one model. Symbols are complex64, ordered (channel, row, col).

    A successive-refinement model (card key "successive_refinement") sends its
    complex latent channels as symbol groups, most important first: rate_index r
    sends the first groups - r of them (CBR (groups - r) / (downsample^2 * 3)) at
    unit average power, and the decoder fills the groups it did not get with
    zeros, so more groups refine the same image. Other models have one rate,
    rate_index 0.
    """

    family = ANALOG

    def __init__(self, name: str, models_dir=None, providers=None):
        self.card = check_card(load_card(name, models_dir), "codec")
        self.name = name
        self.codec_id = int(self.card["codec_id"])
        self.downsample = int(self.card["downsample"])
        self.size_multiple = int(self.card.get("size_multiple", self.downsample))
        self.latent_complex = int(self.card["latent_complex_per_block"])
        self.cbr = float(self.card["cbr"])
        self.groups = int(self.card.get("successive_refinement", {}).get("groups", 0))
        self.encoder = verified_session(self.card, "encoder", providers)
        self.decoder = verified_session(self.card, "decoder", providers)
        self.providers = self.encoder.get_providers()

    def model_files(self) -> dict:
        return {self.name: {role: self.card["files"][role]["sha256"] for role in ("encoder", "decoder")}}

    def latent_shape(self, height: int, width: int) -> LatentShape:
        return LatentShape(2 * self.latent_complex, height // self.downsample, width // self.downsample)

    # --- rates -----------------------------------------------------------------
    def _cbr(self, rate_index: int) -> Fraction:
        """Unchecked: callers validate rate_index."""
        return Fraction(self.latent_complex - rate_index if self.groups else self.latent_complex,
                        self.downsample ** 2 * 3)

    @property
    def rate_labels(self) -> list[str]:
        return [f"cbr {self._cbr(r)}" for r in range(self.groups or 1)]

    def groups_sent(self, rate_index: int) -> int:
        """Complex latent channels sent at rate_index (all of them for a one-rate model)."""
        self.check_rate(rate_index)
        return self.latent_complex - int(rate_index) if self.groups else self.latent_complex

    def cbr_at(self, rate_index: int) -> float:
        return float(self._cbr(self.check_rate(rate_index)))

    def rate_index_for(self, label) -> int:
        """'cbr 1/12', '1/12' or 0.0833 -> the rate index with that CBR."""
        text = str(label).strip().removeprefix("cbr").strip()
        try:
            wanted = cbr_fraction(text)
        except (ValueError, ZeroDivisionError):
            wanted = None
        for index in range(self.rate_count):
            if wanted is not None and self._cbr(index) == wanted:
                return index
        raise ValueError(f"CBR {text}: {self.name} offers {', '.join(self.rate_labels)}")

    def rate_record(self, rate_index: int, height: int, width: int) -> dict:
        return {"cbr": str(self._cbr(rate_index)), "rate_index": int(rate_index),
                "groups": self.groups_sent(rate_index)}

    # --- coding ----------------------------------------------------------------
    def symbol_count(self, height: int, width: int, rate_index: int = 0) -> int:
        shape = self.latent_shape(height, width)
        return self.groups_sent(rate_index) * shape.h * shape.w

    batch_encodes = True

    def encode(self, image: np.ndarray, snr_db: float, rate_index: int = 0) -> np.ndarray:
        """uint8 HxWx3 -> complex64 symbols with unit average power, the rate index's groups only."""
        return self.encode_batch(np.asarray(image)[None], snr_db, rate_index)[0]

    def encode_batch(self, images: np.ndarray, snr_db: float, rate_index: int = 0) -> list:
        """Images of one size (uint8 B x H x W x 3) in one encoder run -> one symbol array each."""
        h, w = images.shape[1:3]
        self.check_size(h, w)
        groups = self.groups_sent(rate_index)
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        snr = np.full((len(images), 1), snr_db, np.float32)
        out = self.encoder.run(None, {"image": x, "snr_db": snr})[0]
        half = out.shape[1] // 2
        z = (out[:, :half] + 1j * out[:, half:])[:, :groups].reshape(len(images), -1)
        if groups < half:   # spend the power on what is sent, as in training (gsc_models.layers.keep_groups)
            z = z / np.sqrt(np.mean(np.abs(z) ** 2, axis=1, keepdims=True) + 1e-12)
        return list(z.astype(np.complex64))

    def decode(self, symbols: np.ndarray, height: int, width: int, snr_db: float, rate_index: int = 0) -> np.ndarray:
        """complex symbols (channel, row, col order) -> uint8 HxWx3; groups not sent are zeros."""
        return self.decode_batch([symbols], height, width, [snr_db], rate_index)[0]

    def decode_batch(self, symbol_lists, height: int, width: int, snrs_db, rate_index: int = 0) -> np.ndarray:
        """Images of one size and rate in one decoder run: a list of symbol arrays -> uint8 BxHxWx3."""
        shape = self.latent_shape(height, width)
        groups = self.groups_sent(rate_index)
        expected = self.symbol_count(height, width, rate_index)
        z = np.zeros((len(symbol_lists), shape.channels // 2, shape.h, shape.w), np.complex64)
        for i, symbols in enumerate(symbol_lists):
            if symbols.size != expected:
                raise ValueError(f"{symbols.size} symbols do not make a {width}x{height} image at rate_index "
                                 f"{rate_index} ({expected} expected)")
            z[i, :groups] = np.asarray(symbols, np.complex64).reshape(groups, shape.h, shape.w)
        latent = np.concatenate([z.real, z.imag], axis=1).astype(np.float32)
        snr = np.asarray(snrs_db, np.float32).reshape(-1, 1)
        out = self.decoder.run(None, {"symbols": latent, "snr_db": snr})[0]
        return np.clip(np.rint(out.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
