"""ONNX Runtime codecs: look a model up by name, check its card and hashes, run it.

The boundary with the training side is models/<name>/card.json plus the ONNX
files it names. A file whose SHA-256 differs from the card is refused.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
# Installed: <prefix>/lib/pythonX.Y/site-packages/gsc_blocks/core/codec.py -> <prefix>/share/gsc/models
INSTALLED_MODELS = Path(__file__).resolve().parents[5] / "share" / "gsc" / "models" \
    if len(Path(__file__).resolve().parents) > 5 else None


class CodecError(RuntimeError):
    """A model cannot be used; the message says which file and what to do."""


def model_search_path() -> list[Path]:
    """$GSC_MODELS, the source tree's models/ (when running from it), then the install prefix's
    share/gsc/models (next to this package, and under sys.prefix)."""
    import sys
    paths = []
    if os.environ.get("GSC_MODELS"):
        paths.append(Path(os.environ["GSC_MODELS"]))
    if REPO_MODELS.is_dir():
        paths.append(REPO_MODELS)
    for candidate in (INSTALLED_MODELS, Path(sys.prefix) / "share" / "gsc" / "models"):
        if candidate is not None and candidate not in paths:
            paths.append(candidate)
    return paths


def find_model(name: str, models_dir: str | os.PathLike | None = None) -> Path:
    candidates = [Path(models_dir)] if models_dir else model_search_path()
    for base in candidates:
        if (base / name / "card.json").is_file():
            return base / name
    raise CodecError(f"model '{name}' not found: no {name}/card.json under "
                     f"{', '.join(str(c) for c in candidates)}. Available: {available_models(models_dir) or 'none'}. "
                     "Restore the models/ folder from git, or export one with scripts/gsc export.")


def available_models(models_dir=None) -> list[str]:
    names = set()
    for base in ([Path(models_dir)] if models_dir else model_search_path()):
        if base.is_dir():
            names.update(p.parent.name for p in base.glob("*/card.json"))
    return sorted(names)


def available_codecs(models_dir=None) -> list[str]:
    """Learned codecs (cards with a codec id) and the separation baseline."""
    names = [n for n in available_models(models_dir) if "codec_id" in load_card(n, models_dir)]
    return names + [SEPARATION_PREFIX]


def load_card(name: str, models_dir=None) -> dict:
    folder = find_model(name, models_dir)
    try:
        card = json.loads((folder / "card.json").read_text())
    except json.JSONDecodeError as err:
        raise CodecError(f"{folder / 'card.json'} is not valid JSON ({err}); restore it from git") from None
    card["_folder"] = str(folder)
    return card


def codec_name_for_id(codec_id: int, models_dir=None) -> str:
    for name in available_models(models_dir):
        if load_card(name, models_dir).get("codec_id") == codec_id:
            return name
    raise CodecError(f"no model card has codec_id {codec_id} (the header's codec field); "
                     f"available models: {available_models(models_dir)}")


def _verified_session(folder: Path, entry: dict, providers):
    import onnxruntime as ort
    path = folder / entry["path"]
    if not path.is_file():
        raise CodecError(f"{path} is missing: restore it with git (git checkout -- {path.name}) "
                         f"or re-export the model with scripts/gsc export")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise CodecError(f"{path} has SHA-256 {digest[:16]}..., but {folder / 'card.json'} says "
                         f"{entry['sha256'][:16]}...: the file is corrupted or was replaced. Restore it "
                         "from git, or re-export the model so file and card match.")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def default_providers() -> list[str]:
    import onnxruntime as ort
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass
class LatentShape:
    channels: int   # real channels (2 x complex)
    h: int
    w: int

    @property
    def n_symbols(self) -> int:
        return self.channels // 2 * self.h * self.w


class JSCCCodec:
    """Encoder/decoder pair of one model. Symbols are complex64, ordered (channel, row, col).

    A successive-refinement model (card key "successive_refinement") sends its
    complex latent channels as symbol groups, most important first: rate_index r
    sends the first groups - r of them (CBR (groups - r) / (downsample^2 * 3)) at
    unit average power, and the decoder fills the groups it did not get with
    zeros, so more groups refine the same image. Other models have one rate,
    rate_index 0.
    """

    def __init__(self, name: str, models_dir=None, providers=None):
        self.card = load_card(name, models_dir)
        if "codec_id" not in self.card:
            raise CodecError(f"model '{name}' is a {self.card.get('kind', 'model')}, not a codec: "
                             f"its card has no codec_id. Codecs: {', '.join(available_codecs(models_dir))}")
        self.name = name
        self.codec_id = int(self.card["codec_id"])
        self.downsample = int(self.card["downsample"])
        self.size_multiple = int(self.card.get("size_multiple", self.downsample))
        self.latent_complex = int(self.card["latent_complex_per_block"])
        self.cbr = float(self.card["cbr"])
        self.groups = int(self.card.get("successive_refinement", {}).get("groups", 0))
        folder = Path(self.card["_folder"])
        providers = providers or default_providers()
        self.encoder = _verified_session(folder, self.card["files"]["encoder"], providers)
        self.decoder = _verified_session(folder, self.card["files"]["decoder"], providers)
        self.providers = self.encoder.get_providers()

    def check_size(self, height: int, width: int):
        m = self.size_multiple
        if height % m or width % m or height < max(8, m) or width < max(8, m):
            raise ValueError(f"image is {width}x{height}: {self.name} needs width and height that are "
                             f"multiples of {m} and at least {max(8, m)} (crop or pad the image)")

    def latent_shape(self, height: int, width: int) -> LatentShape:
        return LatentShape(2 * self.latent_complex, height // self.downsample, width // self.downsample)

    @property
    def rate_count(self) -> int:
        return self.groups or 1

    def groups_sent(self, rate_index: int) -> int:
        """Complex latent channels sent at rate_index (all of them for a one-rate model)."""
        if not 0 <= int(rate_index) < self.rate_count:
            allowed = "0" if self.rate_count == 1 else f"0 to {self.rate_count - 1}"
            raise ValueError(f"rate_index {rate_index}: {self.name} has rate indexes {allowed} "
                             f"(CBR {', '.join(self.cbr_label(r) for r in range(self.rate_count))})")
        return self.latent_complex - int(rate_index) if self.groups else self.latent_complex

    def symbol_count(self, height: int, width: int, rate_index: int = 0) -> int:
        """Channel symbols of one image at rate_index."""
        shape = self.latent_shape(height, width)
        return self.groups_sent(rate_index) * shape.h * shape.w

    def _cbr(self, rate_index: int) -> Fraction:
        """Unchecked: callers validate rate_index (groups_sent's error message lists these)."""
        return Fraction(self.latent_complex - rate_index if self.groups else self.latent_complex,
                        self.downsample ** 2 * 3)

    def cbr_at(self, rate_index: int) -> float:
        self.groups_sent(rate_index)
        return float(self._cbr(rate_index))

    def cbr_label(self, rate_index: int) -> str:
        return str(self._cbr(rate_index))

    def rate_index_for_cbr(self, cbr: str) -> int:
        """'1/12' (or 0.0833) -> the rate index with that CBR; a clear error listing the ones there are."""
        try:
            wanted = Fraction(str(cbr)).limit_denominator(1000)
        except (ValueError, ZeroDivisionError):
            wanted = None
        for index in range(self.rate_count):
            if wanted is not None and self._cbr(index) == wanted:
                return index
        raise ValueError(f"CBR {cbr}: {self.name} offers "
                         f"{', '.join(self.cbr_label(r) for r in range(self.rate_count))}")

    def encode(self, image: np.ndarray, snr_db: float, rate_index: int = 0) -> np.ndarray:
        """uint8 HxWx3 -> complex64 symbols with unit average power, the rate index's groups only."""
        h, w = image.shape[:2]
        self.check_size(h, w)
        groups = self.groups_sent(rate_index)
        x = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
        out = self.encoder.run(None, {"image": x, "snr_db": np.array([[snr_db]], np.float32)})[0][0]
        half = out.shape[0] // 2
        z = (out[:half] + 1j * out[half:])[:groups].reshape(-1)
        if groups < half:   # spend the power on what is sent, as in training (gsc_models.layers.keep_groups)
            z = z / np.sqrt(np.mean(np.abs(z) ** 2) + 1e-12)
        return z.astype(np.complex64)

    def decode(self, symbols: np.ndarray, height: int, width: int, snr_db: float, rate_index: int = 0) -> np.ndarray:
        """complex symbols (channel, row, col order) -> uint8 HxWx3; groups not sent are zeros."""
        shape = self.latent_shape(height, width)
        groups = self.groups_sent(rate_index)
        expected = self.symbol_count(height, width, rate_index)
        if symbols.size != expected:
            raise ValueError(f"{symbols.size} symbols do not make a {width}x{height} image at rate_index "
                             f"{rate_index} ({expected} expected)")
        z = np.zeros((shape.channels // 2, shape.h, shape.w), np.complex64)
        z[:groups] = np.asarray(symbols, np.complex64).reshape(groups, shape.h, shape.w)
        latent = np.concatenate([z.real, z.imag])[None].astype(np.float32)
        out = self.decoder.run(None, {"symbols": latent, "snr_db": np.array([[snr_db]], np.float32)})[0][0]
        return np.clip(np.rint(out.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


SEPARATION_PREFIX = "separation"


def make_codec(name: str, models_dir=None):
    """A codec by name: a learned model folder, or 'separation' ('separation-webp',
    '-jpeg2000', '-avif' fix its source codec; plain 'separation' picks per image)."""
    if name == SEPARATION_PREFIX or name.startswith(SEPARATION_PREFIX + "-"):
        from .separation import SeparationCodec
        source = name[len(SEPARATION_PREFIX) + 1:] or "best"
        try:
            return SeparationCodec(source)
        except ValueError as err:
            raise CodecError(f"codec {name!r}: {err}") from None
    return JSCCCodec(name, models_dir)


def codec_for_id(codec_id: int, models_dir=None):
    """The decoder side of a header's codec id."""
    from .separation import SEPARATION_CODEC_ID
    if codec_id == SEPARATION_CODEC_ID:
        return make_codec(SEPARATION_PREFIX)
    return JSCCCodec(codec_name_for_id(codec_id, models_dir), models_dir)
