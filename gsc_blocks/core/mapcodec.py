"""The part SPIC and SQ-GAN share: a digital codec whose transmitter sends the shipped segmenter's
label map and whose receiver runs one model, the card of which names that segmenter.

The receiver model's card is read and checked when the codec is made (so a missing or tampered
model stops there with its CodecError); the ONNX sessions open on first use, each side opening
only what it runs.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .digital import DigitalCodec
from .models import check_card, load_card


class SegmenterCodec(DigitalCodec):
    model_name: str = ""        # the receiver model's folder in models/
    model_class: type = object  # its runtime class: kind, and (name, models_dir) to open it
    level_count: int = 0        # levels 0 .. level_count - 1, in increasing size
    fixed_level: int | None = None

    def encode_level(self, image: np.ndarray, level_index: int) -> bytes:
        raise NotImplementedError

    def __init__(self, cbr: float = 1 / 6, seed: int = 0x5E9, models_dir=None):
        super().__init__(cbr, seed)
        self.models_dir = models_dir
        card = check_card(load_card(self.model_name, models_dir), self.model_class.kind)
        self.class_names = tuple(card["classes"])
        self.segmenter_name = card["segmenter"]
        self._segmenter = None
        self._model = None
        self._last = None
        self.last_bits: dict = {}

    @classmethod
    def create(cls, variant: str, models_dir=None, options: dict | None = None):
        return cls(variant, cbr=float((options or {}).get("cbr") or 1 / 6), models_dir=models_dir)

    @property
    def segmenter(self):
        if self._segmenter is None:
            from .segmentation import Segmenter
            self._segmenter = Segmenter(self.segmenter_name, self.models_dir)
        return self._segmenter

    @property
    def model(self):
        """The receiver's model (SPIC's super-resolution diffusion model, SQ-GAN's networks)."""
        if self._model is None:
            self._model = self.model_class(self.model_name, self.models_dir)
        return self._model

    def model_files(self) -> dict:
        return {**self.segmenter.model_files(), **self.model.model_files()}

    def encode_payload(self, image: np.ndarray, capacity: int) -> bytes:
        """The fixed level's payload, or the highest level's that fits capacity bytes."""
        h, w = image.shape[:2]
        order = [self.fixed_level] if self.fixed_level is not None else range(self.level_count - 1, -1, -1)
        for index in order:
            payload = self.encode_level(image, index)
            if len(payload) <= capacity:
                return payload
        raise ValueError(f"byte budget too small: the MCS carries {capacity} payload bytes for a {w}x{h} image, "
                         f"{self.name} level {index} needs {len(payload)}; use a higher MCS or a larger CBR")

    @property
    def last_detail(self) -> str | None:
        """The level of the last image sent or received."""
        return self._last

    @staticmethod
    def _key(image: np.ndarray) -> str:
        """A cache key for an image (a benchmark sends each image at several rates)."""
        return hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
