"""Fragment reassembly per image id, with erasures for fragments that never come."""
from collections import OrderedDict
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
    expected value of unit-power symbols) and counted in fragments_lost. So is a
    damaged one (index beyond the fragment count, or the wrong number of symbols):
    it is listed in fragments_damaged and never counted as received.

    Fragments belong to one image only when everything that shapes the image's
    symbols agrees (session, user, id, codec, rate, fragment count, size), so a
    restarted transmitter (new session, ids from 0 again) or an id that wrapped
    never merges with the transmission before it.

    A fragment of an image already handed on (it timed out, was drained, or a copy
    of a fragment it already has comes again) is late: it is counted in `late` and
    dropped, so the image is never decoded a second time from that fragment alone.
    The last DONE_KEPT images handed on are remembered for this.
    """

    DONE_KEPT = 4096

    IMAGE_KEYS = ("session", "user", "image_id", "fragment_count", "codec_id", "rate_index", "power_level",
                  "refine_steps", "height", "width")
    KEY_FIELDS = ("session", "user", "image_id", "codec_id", "rate_index", "fragment_count", "height", "width")

    def __init__(self, timeout_s: float = 2.0, image_symbols=None):
        """image_symbols(meta) -> symbols in the whole image (from the codec named by the header)."""
        self.timeout_s = timeout_s
        self.image_symbols = image_symbols
        self.pending: dict[tuple, PendingImage] = {}
        self.orphans = 0
        self.late = 0
        self.done: OrderedDict[tuple, None] = OrderedDict()    # keys of the images handed on

    def add(self, meta: dict, symbols: np.ndarray, now: float) -> list[AssembledImage]:
        key = tuple(int(meta.get(k, 0)) for k in self.KEY_FIELDS)
        if key in self.done:
            self.late += 1
            return self.expired(now)
        image = self.pending.get(key)
        if image is None and not 0 <= int(meta["fragment_index"]) < int(meta["fragment_count"]):
            self.orphans += 1              # damaged, and of no image pending: nothing to decode
            return self.expired(now)
        if image is None:
            image = self.pending[key] = PendingImage(meta={k: meta.get(k, 0) for k in self.IMAGE_KEYS})
            image.meta["snr_est_db_frames"] = []
            image.meta["t_first_fragment"] = now
            image.meta["fragments_damaged"] = []
        index = int(meta["fragment_index"])
        count = image.meta["fragment_count"]
        if not 0 <= index < count:
            image.meta["fragments_damaged"].append(index)
        else:
            noise = 10.0 ** (-float(meta["snr_eff_db"]) / 10.0)
            image.fragments[index] = (symbols, noise)
        image.meta["snr_est_db_frames"].append(float(meta["snr_est_db"]))
        image.last_seen = now
        done = [self._assemble(key)] if len(image.fragments) == count else []
        return done + self.expired(now)

    def expired(self, now: float, since: float = 0.0) -> list[AssembledImage]:
        """The images that have had no fragment for timeout_s, counted from `since` where that is later
        (a receiver whose frame handler was held up by its decoder: the missing fragment may be
        waiting in its queue)."""
        old = [k for k, img in self.pending.items() if now - max(img.last_seen, since) > self.timeout_s]
        return [self._assemble(k) for k in old]

    def drain(self, match=None) -> list[AssembledImage]:
        """Every pending image now, or those whose meta match(meta) accepts."""
        keys = [k for k, img in self.pending.items() if match is None or match(img.meta)]
        return [self._assemble(k) for k in keys]

    def _assemble(self, key: tuple) -> AssembledImage:
        image = self.pending.pop(key)
        self.done[key] = None
        if len(self.done) > self.DONE_KEPT:
            self.done.popitem(last=False)
        meta = image.meta
        # The sizes come from the codec only here: asking it at the first fragment opened its
        # ONNX session early, and ONNX Runtime then crashed in the decode (a Kodak image, 41 fragments).
        sizes = fragment_sizes(self.image_symbols(meta), meta["fragment_count"])
        for index, size in enumerate(sizes):           # the wrong length: damaged, not received
            if index in image.fragments and image.fragments[index][0].size != size:
                del image.fragments[index]
                meta["fragments_damaged"].append(index)
        parts, noises = [], []
        for index, size in enumerate(sizes):
            if index in image.fragments:
                symbols, noise = image.fragments[index]
                parts.append(symbols)
                noises.append(np.full(size, noise))
            else:
                parts.append(np.zeros(size, np.complex64))
        meta["fragments_received"] = len(image.fragments)
        meta["fragments_lost"] = meta["fragment_count"] - len(image.fragments)
        meta["fragments_missing"] = [i for i in range(meta["fragment_count"]) if i not in image.fragments]
        meta["fragments_damaged"] = sorted(set(meta["fragments_damaged"]) - set(image.fragments))
        mean_noise = float(np.mean(np.concatenate(noises))) if noises else 1.0
        meta["snr_eff_db"] = float(-10 * np.log10(mean_noise))
        frames = meta.pop("snr_est_db_frames")
        meta["snr_est_db"] = float(np.mean(frames)) if frames else float("nan")
        return AssembledImage(meta=meta, symbols=np.concatenate(parts).astype(np.complex64),
                              snr_eff_db=meta["snr_eff_db"])
