"""Lossless label-map coding: exact round trips, fewer bits than lossless WebP on CamVid maps."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gsc_blocks.core.labelmap import decode_labels, encode_labels, encode_webp

CAMVID = Path(__file__).resolve().parents[1] / "tests" / "data" / "camvid"


def camvid_maps():
    return [np.asarray(Image.open(p)) for p in sorted((CAMVID / "labels").glob("*.png"))]


def test_camvid_maps_round_trip_in_fewer_bits_than_lossless_webp():
    maps = camvid_maps()
    assert len(maps) == 3
    ours = webp = 0
    for labels in maps:
        data = encode_labels(labels, 12)
        assert np.array_equal(decode_labels(data, *labels.shape, 12), labels)
        ours, webp = ours + len(data), webp + len(encode_webp(labels))
    assert ours < 0.9 * webp
    assert ours * 8 / (3 * 192 * 256) < 0.3       # bits per pixel of the map


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (5, 6), (48, 64)])
def test_odd_shapes_and_random_maps_round_trip(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for labels in (rng.integers(0, 12, shape), np.full(shape, 3), (np.arange(shape[1]) % 12)[None].repeat(shape[0], 0)):
        labels = labels.astype(np.uint8)
        assert np.array_equal(decode_labels(encode_labels(labels, 12), *shape, 12), labels)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="ids below 12"):
        encode_labels(np.full((4, 4), 12, np.uint8), 12)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        encode_labels(np.zeros((2, 2, 2), np.uint8), 12)
