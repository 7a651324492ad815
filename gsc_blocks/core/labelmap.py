"""Lossless coding of semantic label maps: an adaptive context model driving constriction's
range coder, row by row.

Each row is coded as its change points (where a label differs from its left
neighbour) and the label at each change point:
- change flags: one binary decision per pixel, context = the edges of the two rows
  above at and around that column (vertical edges persist, and drift by a pixel);
- labels: at each change point, context = (the label on its left, the label above
  it); the left label is excluded, since a change point differs from it.
Counts adapt as rows are coded, the same on both sides (flags after each row,
labels after each symbol), so nothing but the range coder's words is sent. A row's
flags depend only on rows above it, so the decoder takes them in one vectorized
call per row. The plain baseline is Pillow's lossless WebP (encode_webp).
"""
import io

import numpy as np

FLAG_PRIOR = 0.4          # initial count of each flag value per context
LABEL_PRIOR = 0.05        # initial count of each label per (left, above) context
N_FLAG_CONTEXTS = 16


def _edges(row: np.ndarray) -> np.ndarray:
    e = np.zeros(row.size, np.int64)
    e[1:] = row[1:] != row[:-1]
    return e


def _flag_contexts(above: np.ndarray, above2: np.ndarray) -> np.ndarray:
    e1, e2 = _edges(above), _edges(above2)
    right = np.append(e1[1:], 0)
    left = np.insert(e1[:-1], 0, 0)
    return ((e1 * 2 + right) * 2 + left) * 2 + e2


class _Model:
    """The adaptive counts both sides keep."""

    def __init__(self, n_labels: int, width: int):
        self.n = n_labels
        self.flags = np.full((N_FLAG_CONTEXTS, 2), FLAG_PRIOR)
        self.labels = np.full((n_labels, n_labels, n_labels), LABEL_PRIOR)
        self.above = np.full(width, n_labels - 1, np.int64)     # rows above the first: the last label
        self.above2 = self.above.copy()

    def flag_probabilities(self):
        ctx = _flag_contexts(self.above, self.above2)
        counts = self.flags[ctx]
        return ctx, (counts / counts.sum(1, keepdims=True)).astype(np.float32)

    def label_probabilities(self, left: int, above: int, first: bool) -> np.ndarray:
        counts = self.labels[left, above].copy()
        if not first:
            counts[left] = 0.0           # a change point differs from its left neighbour
        return (counts / counts.sum()).astype(np.float32)

    def end_row(self, row, ctx, flags):
        np.add.at(self.flags, (ctx[1:], flags[1:]), 1.0)
        self.above2, self.above = self.above, row


def encode_labels(labels: np.ndarray, n_labels: int) -> bytes:
    """uint8 [H, W] with values < n_labels -> bytes."""
    import constriction
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0 or labels.max() >= n_labels:
        raise ValueError(f"a label map must be a non-empty 2-D array of ids below {n_labels}")
    family = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    model = _Model(n_labels, labels.shape[1])
    for row in labels.astype(np.int64):
        flags = _edges(row)
        ctx, p = model.flag_probabilities()
        if row.size > 1:
            encoder.encode(flags[1:].astype(np.int32), family, p[1:])
        left, symbols, probs = n_labels - 1, [], []
        for x in np.concatenate([[0], np.nonzero(flags)[0]]):
            probs.append(model.label_probabilities(left, model.above[x], x == 0))
            symbols.append(row[x])
            model.labels[left, model.above[x], row[x]] += 1.0
            left = row[x]
        encoder.encode(np.asarray(symbols, np.int32), family, np.asarray(probs, np.float32))
        model.end_row(row, ctx, flags)
    return encoder.get_compressed().tobytes()


def decode_labels(data: bytes, height: int, width: int, n_labels: int) -> np.ndarray:
    """bytes -> uint8 [height, width]; ValueError when the stream ends too soon or makes no map."""
    import constriction
    words = np.frombuffer(data[:len(data) // 4 * 4], np.uint32)
    family = constriction.stream.model.Categorical(perfect=False)
    decoder = constriction.stream.queue.RangeDecoder(words)
    model = _Model(n_labels, width)
    out = np.empty((height, width), np.uint8)
    try:
        for r in range(height):
            ctx, p = model.flag_probabilities()
            flags = np.zeros(width, np.int64)
            if width > 1:
                flags[1:] = decoder.decode(family, p[1:])
            row = np.empty(width, np.int64)
            starts = np.concatenate([[0], np.nonzero(flags)[0]])
            left = n_labels - 1
            for k, x in enumerate(starts):
                p_label = model.label_probabilities(left, model.above[x], x == 0)
                label = int(decoder.decode(family, p_label[None])[0])
                model.labels[left, model.above[x], label] += 1.0
                end = starts[k + 1] if k + 1 < len(starts) else width
                row[x:end] = label
                left = label
            out[r] = row
            model.end_row(row, ctx, flags)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"label map stream does not decode: {err}") from None
    return out


def encode_webp(labels: np.ndarray) -> bytes:
    """The plain baseline: Pillow's lossless WebP of the map (one grey channel)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(labels, np.uint8)).save(buf, "WEBP", lossless=True, quality=100, method=6)
    return buf.getvalue()
