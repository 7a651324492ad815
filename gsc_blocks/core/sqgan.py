"""SQ-GAN: semantically masked vector quantization, on the digital pipeline.

Transmitter: the CamVid segmenter's own map of the image; models/sqgan's tx.onnx
gives per latent (1/16 per side) an image codebook index and a SAMM relevance
score, and per map latent a map codebook index; map_samm.onnx scores the map
latents. A level (LEVELS) keeps a fraction of the image latents and a fraction
of the map latents (`sqgan`): the top-scored image latents; for the map, half
the kept count by the map SAMM's score, the rest added in rounds where
map_probe.onnx (the receiver's map ADM and map decoder, run at the
transmitter) shows the receiver's map most wrong. `sqgan-random` keeps random
sets of the same sizes (the comparison that shows what relevance buys).
map_adm.onnx fills the masked map latents; rx.onnx decodes the map, fills the
masked image latents (ADM) and regenerates the image.

Payload (bytes, every one counted in bpp): level (1; its top bit set when the
map stream is prior-coded); map stream length (2); the map stream: the map
mask as the rank of its kept set (0 bytes when every map latent is kept), then
the kept map indices in raster order at map_index_bits each, packed, or, when
that is smaller, range-coded (constriction) under the model's shipped map prior
(map_prior.npz: each index given its kept left and above neighbours, tables
counted on CamVid train); CRC-32 of those three; the image mask as the rank of
the kept set among all sets of that size (ceil(log2 C(latents, kept)) bits, 0
when every latent is kept) and the kept indices at index_bits each in raster
order, packed; CRC-32 of that stream. A stream whose CRC fails names itself
(label map, image latents) and the image is lost with that reason.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from .mapcodec import SegmenterCodec
from .models import CodecError, check_card, load_card, model_files, verified_path, verified_session

SQGAN = "sqgan"
SQGAN_CODEC_ID = 12
# (kept fraction of the image latents, of the map latents) per level, fewest bits first; the level is
# the payload's first byte.
LEVELS = ((0.05, 0.3), (0.05, 0.4), (0.05, 1.0), (0.1, 1.0), (0.2, 1.0), (0.3, 1.0), (0.4, 1.0), (0.6, 1.0),
          (0.8, 1.0), (1.0, 1.0))
CODED_MAP = 0x80            # level byte flag: the map stream is range-coded under the map prior
# The map mask (sqgan, not sqgan-random): the map SAMM's top PROBE_FIRST of the kept count, then in
# PROBE_ROUNDS rounds the latents where the receiver's map (map_probe.onnx) errs most.
PROBE_FIRST = 0.5
PROBE_ROUNDS = 8


def kept_count(fraction: float, grid: int) -> int:
    return max(1, min(grid, math.ceil(fraction * grid - 1e-9)))


def top_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """bool mask keeping the `count` highest scores (ties: the earlier latent in raster order)."""
    flat = scores.ravel()
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:count]] = True
    return keep.reshape(scores.shape)


def refined_mask(scores: np.ndarray, error, count: int, first: float = PROBE_FIRST,
                 rounds: int = PROBE_ROUNDS) -> np.ndarray:
    """bool mask of `count` latents: the top round(first x count) scores, then in `rounds` rounds the
    unkept latents where error(mask) is highest (ties to the higher score, then raster order). As
    models/gsc_models/sqgan.py refined_map_mask."""
    flat = scores.ravel().astype(np.float32)
    keep = np.zeros(flat.size, bool)
    first_count = max(1, int(round(count * first)))
    keep[np.argsort(-flat, kind="stable")[:first_count]] = True
    left = count - first_count
    for r in range(rounds):
        if left <= 0:
            break
        step = -(-left // (rounds - r))
        value = np.asarray(error(keep.reshape(scores.shape)), np.float32).ravel() + np.float32(1e-3) * flat
        value[keep] = -1e9
        keep[np.argsort(-value, kind="stable")[:step]] = True
        left -= step
    return keep.reshape(scores.shape)


def random_mask(shape, count: int, seed: int) -> np.ndarray:
    keep = np.zeros(int(np.prod(shape)), bool)
    keep[np.random.default_rng(seed).permutation(keep.size)[:count]] = True
    return keep.reshape(shape)


def pack(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers at `bits` each, most significant bit first, zero-padded to whole bytes."""
    values = np.asarray(values, np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ValueError(f"values outside 0..{(1 << bits) - 1} cannot be packed at {bits} bits")
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((values[:, None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()


def unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, np.uint8))[:count * bits]
    if flat.size < count * bits:
        raise ValueError(f"{len(data)} bytes hold fewer than {count} values of {bits} bits")
    return (flat.reshape(count, bits).astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(1)


def _crc(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


def mask_bytes(latents: int, kept: int) -> int:
    """Bytes of a kept set's rank: ceil(log2 C(latents, kept)) bits, whole bytes."""
    return math.ceil((math.comb(latents, kept) - 1).bit_length() / 8)


def encode_mask(mask: np.ndarray) -> bytes:
    """A bool mask as the rank of its set among all sets of its size (combinatorial number system)."""
    rank = sum(math.comb(int(pos), i + 1) for i, pos in enumerate(np.flatnonzero(np.ravel(mask))))
    return rank.to_bytes(mask_bytes(np.size(mask), int(np.count_nonzero(mask))), "big")


def decode_mask(data: bytes, latents: int, kept: int) -> np.ndarray:
    """encode_mask's inverse -> bool [latents]; ValueError for a rank no set of that size has."""
    rank = int.from_bytes(data, "big")
    if rank >= math.comb(latents, kept):
        raise ValueError(f"mask rank {rank} is out of range for {kept} of {latents} latents")
    mask = np.zeros(latents, bool)
    pos = latents
    for i in range(kept, 0, -1):
        pos -= 1
        while math.comb(pos, i) > rank:
            pos -= 1
        mask[pos] = True
        rank -= math.comb(pos, i)
    return mask


class MapPrior:
    """The shipped context model of the map indices (map_prior.npz, float32 probabilities):
    `first` for the top-left index, `left` [K, K] given the left neighbour (top row),
    `above` [K, K] given the neighbour above (left column), their mean elsewhere. Only
    elementwise float32 arithmetic on the shipped tables, so both ends build the same
    probabilities bit for bit."""

    def __init__(self, path):
        with np.load(path, allow_pickle=False) as z:
            self.first, self.left, self.above = (np.ascontiguousarray(z[k], np.float32)
                                                 for k in ("first", "left", "above"))
        k = self.first.size
        if self.left.shape != (k, k) or self.above.shape != (k, k) or not (self.first > 0).all() \
                or not (self.left > 0).all() or not (self.above > 0).all():
            raise CodecError(f"{path}: a map prior needs positive tables first [K], left and above [K, K]; "
                             "restore it from git or rebuild it with train_sqgan --map-prior")

    def _p(self, grid: np.ndarray, kept: np.ndarray, r: int, c: int) -> np.ndarray:
        """The index's probabilities given its left and above neighbours where those were sent."""
        left, above = c > 0 and kept[r, c - 1], r > 0 and kept[r - 1, c]
        if left and above:
            return (self.left[grid[r, c - 1]] + self.above[grid[r - 1, c]]) * np.float32(0.5)
        if left:
            return self.left[grid[r, c - 1]]
        return self.above[grid[r - 1, c]] if above else self.first

    def encode(self, grid: np.ndarray, kept: np.ndarray | None = None) -> bytes:
        """The indices where `kept` (default: all), in raster order."""
        import constriction
        grid = np.asarray(grid, np.int64)
        kept = np.ones(grid.shape, bool) if kept is None else kept
        cells = np.argwhere(kept)
        probs = np.stack([self._p(grid, kept, r, c) for r, c in cells])
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(grid[kept].astype(np.int32), constriction.stream.model.Categorical(perfect=False), probs)
        return encoder.get_compressed().tobytes()

    def decode(self, data: bytes, height: int, width: int, kept: np.ndarray | None = None) -> np.ndarray:
        """-> int64 [height, width] (0 where not kept); ValueError when the stream does not decode."""
        import constriction
        if len(data) % 4:
            raise ValueError(f"a prior-coded map stream is whole 32-bit words, not {len(data)} bytes")
        kept = np.ones((height, width), bool) if kept is None else kept
        family = constriction.stream.model.Categorical(perfect=False)
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, np.uint32))
        grid = np.zeros((height, width), np.int64)
        try:
            for r, c in np.argwhere(kept):
                grid[r, c] = decoder.decode(family, self._p(grid, kept, r, c)[None])[0]
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"map stream does not decode: {err}") from None
        return grid


class SqganModel:
    """models/sqgan: tx.onnx and rx.onnx, each opened (SHA-256 checked) when first used."""

    kind = "sqgan"

    def __init__(self, name: str = SQGAN, models_dir=None, providers=None):
        self.card = check_card(load_card(name, models_dir), self.kind)
        self.name, self.providers = name, providers
        self.downsample = int(self.card["downsample"])
        self.index_bits = int(self.card["index_bits"])
        self.map_index_bits = int(self.card["map_index_bits"])
        self.n_classes = len(self.card["classes"])
        self._sessions: dict = {}
        self._prior = None

    @property
    def map_prior(self) -> MapPrior:
        if self._prior is None:
            self._prior = MapPrior(verified_path(self.card, "map_prior"))
        return self._prior

    def session(self, role: str):
        if role not in self._sessions:
            self._sessions[role] = verified_session(self.card, role, self.providers)
        return self._sessions[role]

    def model_files(self) -> dict:
        return {self.name: model_files(self.card)}

    def analyse(self, image: np.ndarray, labels: np.ndarray):
        """uint8 HxWx3, uint8 HxW map -> (indices, scores, map_indices), each [h, w]."""
        one_hot = np.eye(self.n_classes, dtype=np.float32)[labels].transpose(2, 0, 1)[None].copy()
        x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        idx, scores, midx = self.session("tx").run(None, {"image": x, "labels": one_hot})
        return idx[0], scores[0], midx[0]

    def synthesise(self, indices: np.ndarray, mask: np.ndarray, map_indices: np.ndarray):
        """-> (uint8 HxWx3 image, uint8 HxW the receiver's map)."""
        image, labels = self.session("rx").run(None, {
            "indices": indices[None].astype(np.int64), "mask": mask[None].astype(np.float32),
            "map_indices": map_indices[None].astype(np.int64)})
        pixels = np.clip(np.round(image[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
        return pixels, labels[0].astype(np.uint8)

    def map_scores(self, map_indices: np.ndarray) -> np.ndarray:
        """The map SAMM's relevance [h, w] of each map latent."""
        return self.session("map_samm").run(None, {"map_indices": map_indices[None].astype(np.int64)})[0][0]

    def map_error(self, map_indices: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per map latent [h, w], the share of its pixels the receiver's map (map ADM fill, map decoder)
        gets wrong against the sent map `labels` [H, W], with this mask (map_probe.onnx)."""
        return self.session("map_probe").run(None, {
            "map_indices": map_indices[None].astype(np.int64), "map_mask": mask[None].astype(np.float32),
            "labels": labels[None].astype(np.int64)})[0][0]

    def fill_map(self, map_indices: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Every map index [h, w]: the sent ones (mask) kept, the map ADM's estimate elsewhere."""
        return self.session("map_adm").run(None, {"map_indices": map_indices[None].astype(np.int64),
                                                  "map_mask": mask[None].astype(np.float32)})[0][0]


class SqganCodec(SegmenterCodec):
    """SQ-GAN on the digital pipeline; rate index = MCS.

    Variant (the name's tail): '' (each image: the highest level whose payload fits the MCS's
    bytes), a level index into LEVELS ('sqgan-2'), 'random' (random masking instead of SAMM's
    scores, same kept fraction) or both ('sqgan-random-2').
    """

    name = "sqgan"
    codec_id = SQGAN_CODEC_ID
    size_multiple = 16
    min_side = 32
    own_crcs = True
    classes: tuple = ()
    model_name = SQGAN
    model_class = SqganModel
    level_count = len(LEVELS)

    def __init__(self, variant: str = "", cbr: float = 1 / 6, seed: int = 0x5E9, models_dir=None):
        super().__init__(cbr, seed, models_dir)
        parts = [p for p in str(variant).split("-") if p]
        self.random = "random" in parts
        rest = [p for p in parts if p != "random"]
        if len(rest) > 1 or (rest and not (rest[0].isdigit() and int(rest[0]) < len(LEVELS))):
            raise ValueError(f"sqgan variant {variant!r}: a level 0 to {len(LEVELS) - 1} (kept fractions "
                             f"{', '.join(SqganCodec.level_label(k) for k in range(len(LEVELS)))}), 'random', "
                             "or 'random-<level>'")
        self.fixed_level = int(rest[0]) if rest else None
        if self.random:
            self.name = "sqgan-random"
        self._cache: dict = {}

    @staticmethod
    def level_label(level_index: int) -> str:
        image, labels = LEVELS[level_index]
        return f"kept {image:g}" + (f" map {labels:g}" if labels < 1 else "")

    def _analysis(self, image: np.ndarray):
        """[indices, scores, map_indices, seed, {map kept count: map stream}, map scores, the sent map]
        of an image, cached (a benchmark sends it at several levels)."""
        key = self._key(image)
        if key not in self._cache:
            if len(self._cache) > 2000:
                self._cache.clear()
            labels = self.segmenter.predict(image)[0]
            idx, scores, midx = self.model.analyse(image, labels)
            self._cache[key] = [idx, scores, midx, int.from_bytes(bytes.fromhex(key[:8]), "big"), {}, None,
                                labels]
        return self._cache[key]

    def map_mask(self, analysis, count: int) -> np.ndarray:
        """The kept map latents: the map SAMM's choice refined by the map probe (refined_mask), or a
        random set of that size."""
        midx, seed, labels = analysis[2], analysis[3], analysis[6]
        if count >= midx.size:
            return np.ones(midx.shape, bool)
        if self.random:
            return random_mask(midx.shape, count, seed ^ 0x5A5A5A5A)
        if analysis[5] is None:
            analysis[5] = self.model.map_scores(midx)
        return refined_mask(analysis[5], lambda mask: self.model.map_error(midx, mask, labels), count)

    def map_stream(self, midx: np.ndarray, kept: np.ndarray | None = None) -> tuple[int, bytes]:
        """(CODED_MAP or 0, stream): the map mask's rank, then the smaller of the kept indices packed and
        prior-coded."""
        kept = np.ones(midx.shape, bool) if kept is None else kept
        packed = pack(midx[kept], self.model.map_index_bits)
        coded = self.model.map_prior.encode(midx, kept)
        flag, data = (CODED_MAP, coded) if len(coded) < len(packed) else (0, packed)
        return flag, encode_mask(kept) + data

    def encode_level(self, image: np.ndarray, level_index: int) -> bytes:
        h, w = image.shape[:2]
        self.check_size(h, w)
        analysis = self._analysis(image)
        idx, scores, midx, image_seed, streams = analysis[:5]
        fraction, map_fraction = LEVELS[level_index]
        count, map_count = kept_count(fraction, idx.size), kept_count(map_fraction, midx.size)
        mask = random_mask(idx.shape, count, image_seed) if self.random else top_mask(scores, count)
        if map_count not in streams:
            streams[map_count] = self.map_stream(midx, self.map_mask(analysis, map_count))
        map_stream = streams[map_count]
        coded = map_stream[0] & CODED_MAP
        head = bytes([level_index | coded]) + len(map_stream[1]).to_bytes(2, "big") + map_stream[1]
        body = encode_mask(mask) + pack(idx[mask], self.model.index_bits)
        payload = head + _crc(head) + body + _crc(body)
        self.last_bits = {"total": 8 * len(payload), "map": 8 * len(map_stream[1]), "map_coded": bool(coded),
                          "image": 8 * len(body), "kept": count, "latents": int(idx.size), "map_kept": map_count,
                          "map_latents": int(midx.size), "classes": {}}
        self._last = f"level {level_index} ({self.level_label(level_index)}{', random' if self.random else ''})"
        return payload

    def decode_payload(self, payload: bytes, height: int, width: int, steps: int = 0, seed: int = 0) -> np.ndarray:
        self.check_size(height, width)
        d = self.model.downsample
        gh, gw = height // d, width // d
        grid = gh * gw
        map_len = 3 + int.from_bytes(payload[1:3], "big")
        head = payload[:map_len]
        if len(payload) < map_len + 4 or payload[map_len:map_len + 4] != _crc(head):
            raise CodecError(f"label map failed its CRC ({self.name})")
        level, coded = head[0] & ~CODED_MAP, head[0] & CODED_MAP
        if level >= len(LEVELS):
            raise CodecError(f"{self.name} payload names level {level}, not one of 0 to {len(LEVELS) - 1}")
        count, map_count = kept_count(LEVELS[level][0], grid), kept_count(LEVELS[level][1], grid)
        map_mask_len = mask_bytes(grid, map_count)
        mask_len = mask_bytes(grid, count)
        body_len = mask_len + math.ceil(count * self.model.index_bits / 8)
        at = map_len + 4
        body = payload[at:at + body_len]
        if len(body) < body_len or payload[at + body_len:at + body_len + 4] != _crc(body):
            raise CodecError(f"image latents failed their CRC ({self.name} level {level})")
        try:
            map_mask = decode_mask(head[3:3 + map_mask_len], grid, map_count).reshape(gh, gw)
            data = head[3 + map_mask_len:]
            if coded:
                midx = self.model.map_prior.decode(data, gh, gw, map_mask)
            else:
                midx = np.zeros((gh, gw), np.int64)
                midx[map_mask] = unpack(data, map_count, self.model.map_index_bits)
            mask = decode_mask(body[:mask_len], grid, count).reshape(gh, gw)
        except ValueError as err:
            raise CodecError(f"{self.name} payload passed its CRCs but {err}") from None
        if map_count < grid:
            midx = self.model.fill_map(midx, map_mask)
        idx = np.zeros((gh, gw), np.int64)
        idx[mask] = unpack(body[mask_len:], count, self.model.index_bits)
        pixels, _ = self.model.synthesise(idx, mask, midx)
        self._last = f"level {level} ({self.level_label(level)})"
        return pixels
