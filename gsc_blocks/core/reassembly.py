"""Fragment reassembly per image id, with erasures for fragments that never come."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PendingImage:
    meta: dict
    fragments: dict = field(default_factory=dict)     # index -> (symbols, noise variance)
    last_seen: float = 0.0


@dataclass
class AssembledImage:
    meta: dict
    symbols: np.ndarray
    snr_eff_db: float


def fragment_sizes(total: int, count: int) -> list[int]:
    """Sizes np.array_split gives: the first total % count fragments are one longer."""
    base, extra = divmod(total, count)
    return [base + 1 if i < extra else base for i in range(count)]


class Reassembler:
    """Collects fragments by image id; returns images complete, expired or drained.

    A missing fragment is filled with zeros (the decoder sees an erasure: the
    expected value of unit-power symbols) and counted in fragments_lost.
    """

    IMAGE_KEYS = ("image_id", "fragment_count", "codec_id", "rate_index", "power_level",
                  "refine_steps", "height", "width")

    def __init__(self, timeout_s: float = 2.0, image_symbols=None):
        """image_symbols(meta) -> symbols in the whole image (from the codec named by the header)."""
        self.timeout_s = timeout_s
        self.image_symbols = image_symbols
        self.pending: dict[tuple, PendingImage] = {}

    def add(self, meta: dict, symbols: np.ndarray, now: float) -> list[AssembledImage]:
        key = (int(meta["image_id"]), int(meta["height"]), int(meta["width"]), int(meta["codec_id"]))
        image = self.pending.get(key)
        if image is None:
            image = self.pending[key] = PendingImage(meta={k: meta[k] for k in self.IMAGE_KEYS})
            image.meta["snr_est_db_frames"] = []
            image.meta["t_first_fragment"] = now
        noise = 10.0 ** (-float(meta["snr_eff_db"]) / 10.0)
        image.fragments[int(meta["fragment_index"])] = (symbols, noise)
        image.meta["snr_est_db_frames"].append(float(meta["snr_est_db"]))
        image.last_seen = now
        done = [self._assemble(self.pending.pop(key))] if len(image.fragments) == image.meta["fragment_count"] else []
        return done + self.expired(now)

    def expired(self, now: float) -> list[AssembledImage]:
        old = [k for k, img in self.pending.items() if now - img.last_seen > self.timeout_s]
        return [self._assemble(self.pending.pop(k)) for k in old]

    def drain(self) -> list[AssembledImage]:
        images = [self._assemble(img) for img in self.pending.values()]
        self.pending.clear()
        return images

    def _assemble(self, image: PendingImage) -> AssembledImage:
        meta = image.meta
        total = self.image_symbols(meta)
        sizes = fragment_sizes(total, meta["fragment_count"])
        parts, noises = [], []
        for index, size in enumerate(sizes):
            if index in image.fragments and image.fragments[index][0].size == size:
                symbols, noise = image.fragments[index]
                parts.append(symbols)
                noises.append(np.full(size, noise))
            else:
                parts.append(np.zeros(size, np.complex64))
        meta["fragments_received"] = len(image.fragments)
        meta["fragments_lost"] = meta["fragment_count"] - len(image.fragments)
        meta["fragments_missing"] = [i for i in range(meta["fragment_count"]) if i not in image.fragments]
        mean_noise = float(np.mean(np.concatenate(noises))) if noises else 1.0
        meta["snr_eff_db"] = float(-10 * np.log10(mean_noise))
        frames = meta.pop("snr_est_db_frames")
        meta["snr_est_db"] = float(np.mean(frames)) if frames else float("nan")
        return AssembledImage(meta=meta, symbols=np.concatenate(parts).astype(np.complex64),
                              snr_eff_db=meta["snr_eff_db"])
