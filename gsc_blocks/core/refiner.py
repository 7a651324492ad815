"""The diffusion refiner at the receiver: DDIM sampling on the ONNX denoiser.

models/refiner/card.json names the codecs it was trained on, the noise
schedule and the denoiser file (SHA-256 checked). The sampler is the same as
the training side's (gsc_models.refiner.ddim_refine), in numpy: steps = 0
returns the JSCC output, 1 the network's estimate of the mean residual, more
steps a sharper posterior sample at one network evaluation each. The starting
noise is seeded per image, so a decode is reproducible.
"""
import math

import numpy as np

from .models import CodecError, OnnxModel, available_models, card_kind, check_card, load_card

REFINER = "refiner"


def refiner_name_for(codec_name: str, models_dir=None):
    """The model name of the refiner trained on codec_name's outputs, or None when no card lists it."""
    broken = None
    for name in available_models(models_dir):
        try:
            card = load_card(name, models_dir)
        except CodecError:
            continue        # unreadable: its kind is unknown
        if card_kind(card) != "refiner" or codec_name not in card.get("codecs", []):
            continue
        try:
            check_card(card, "refiner")
        except CodecError:
            broken = broken or name   # never stands in for a good card; alone, it fails with its message
            continue
        return name
    return broken


def refiner_for(codec_name: str, models_dir=None):
    """The refiner trained on codec_name's outputs, or None when no card lists that codec."""
    name = refiner_name_for(codec_name, models_dir)
    return Refiner(name, models_dir) if name else None


class DiffusionModel(OnnxModel):
    """An ONNX denoiser with a card's "diffusion" entry: the cosine schedule and the DDIM sampler on the
    scaled residual to an image (the refiner's JSCC output, SPIC's upsampled coarse image)."""

    role = "denoiser"
    what = ""              # how messages name it

    def __init__(self, name: str, models_dir=None, providers=None):
        super().__init__(name, models_dir, providers)
        diffusion = self.card["diffusion"]
        self.offset = float(diffusion["cosine_offset"])
        self.scale = float(diffusion["residual_scale"])
        self.max_steps = int(diffusion["max_steps"])
        self.size_multiple = int(diffusion["size_multiple"])

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        f = math.cos((t + self.offset) / (1 + self.offset) * math.pi / 2)
        f0 = math.cos(self.offset / (1 + self.offset) * math.pi / 2)
        abar = min(max((f / f0) ** 2, 0.0), 1.0)
        return math.sqrt(abar), math.sqrt(1.0 - abar)

    def check_steps(self, steps: int) -> int:
        if not 0 <= int(steps) <= self.max_steps:
            raise ValueError(f"refine_steps {steps}: the {self.what} takes 0 to {self.max_steps} steps")
        return int(steps)

    def sample(self, image: np.ndarray, steps: int, seed: int, inputs) -> np.ndarray:
        """uint8 HxWx3 -> uint8 HxWx3 after `steps` DDIM steps; inputs(z_t, t, image as float [1,3,H,W])
        gives the session's input dict. The starting noise is seeded."""
        if self.check_steps(steps) == 0:
            return image
        return self.sample_batch(image[None], steps, [seed], inputs)[0]

    def sample_batch(self, images: np.ndarray, steps: int, seeds, inputs) -> np.ndarray:
        """uint8 BxHxWx3 of one size -> uint8 BxHxWx3, one network run per step for the whole batch;
        each image's starting noise is seeded by its own seed, so an image comes out the same
        (to float rounding) in any batch. inputs(z_t, t [B,1], images as float [B,3,H,W])."""
        steps = self.check_steps(steps)
        h, w = images.shape[1:3]
        if steps == 0:
            return images
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"image is {w}x{h}: the {self.what} needs sides that are multiples of "
                             f"{self.size_multiple}")
        coarse = np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32) / 255.0
        z = np.stack([np.random.default_rng(seed).standard_normal(coarse.shape[1:]) for seed in seeds])
        z = z.astype(np.float32)
        r0 = z
        batch = len(images)
        for i in range(steps, 0, -1):
            a, s = self.alpha_sigma(i / steps)
            v = self.session.run(None, inputs(z, np.full((batch, 1), i / steps, np.float32), coarse))[0]
            r0 = a * z - s * v
            eps = s * z + a * v
            a_next, s_next = self.alpha_sigma((i - 1) / steps)
            z = (a_next * r0 + s_next * eps).astype(np.float32)
        out = np.clip(coarse + r0 / self.scale, 0.0, 1.0)
        return np.clip(np.rint(out.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)


class Refiner(DiffusionModel):
    kind = what = "refiner"

    def __init__(self, name: str = REFINER, models_dir=None, providers=None):
        super().__init__(name, models_dir, providers)
        self.codecs = list(self.card["codecs"])

    def refine(self, image: np.ndarray, snr_db: float, steps: int, seed: int = 0) -> np.ndarray:
        """uint8 HxWx3 (the JSCC output) -> uint8 HxWx3 after `steps` DDIM steps."""
        if self.check_steps(steps) == 0:
            return image
        return self.refine_batch(image[None], [snr_db], steps, [seed])[0]

    def refine_batch(self, images: np.ndarray, snrs_db, steps: int, seeds) -> np.ndarray:
        """uint8 BxHxWx3 (JSCC outputs of one size), one SNR and seed each -> refined, in one batch."""
        snr = np.asarray(snrs_db, np.float32).reshape(-1, 1)
        return self.sample_batch(images, steps, seeds, lambda z, t, coarse: {"z_t": z, "coarse": coarse, "t": t,
                                                                               "snr_db": snr})
