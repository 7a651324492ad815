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

    @property
    def last_detail(self) -> str | None:
        """The level of the last image sent or received."""
        return self._last

    @staticmethod
    def _key(image: np.ndarray) -> str:
        """A cache key for an image (a benchmark sends each image at several rates)."""
        return hashlib.sha1(image.tobytes()).hexdigest() + str(image.shape)
