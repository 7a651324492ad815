"""bench link's options on a few committed images: CBR curves of the successive-refinement codec,
Rayleigh block fading on both channels, and how lost images are scored."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from gsc_blocks.bench import _lost_scores, bench_link, ideal_awgn_point
from gsc_blocks.core.codec import JSCCCodec
from gsc_blocks.core.fading import block_fading_gains
from gsc_blocks.core.images import load_image
from gsc_blocks.core.report import account

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "samples"


def _cifar_folder(tmp_path, count=6):
    """The committed CIFAR samples laid out as datasets/cifar10/test (index_label.webp, lossless)."""
    folder = tmp_path / "datasets" / "cifar10" / "test"
    folder.mkdir(parents=True)
    for path in sorted(SAMPLES.glob("cifar_*.png"))[:count]:
        _, index, label = path.stem.split("_")
        Image.open(path).save(folder / f"{index}_{label}.webp", lossless=True)
    return folder.parents[1]


def test_lost_image_scores_against_the_mean_in_its_orientation():
    rng = np.random.default_rng(0)
    landscape = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    mean = np.full((64, 96, 3), 100, np.uint8)
    portrait = landscape.transpose(1, 0, 2).copy()
    assert _lost_scores(portrait, mean)[0] == _lost_scores(landscape, mean)[0]
    odd = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.isfinite(_lost_scores(odd, mean)[0])


def test_ideal_point_under_block_fading_decodes_each_image_at_its_own_snr():
    codec = JSCCCodec("deepjscc")
    images = [load_image(p) for p in sorted(SAMPLES.glob("cifar_*.png"))[:4]]
    flat = ideal_awgn_point(codec, images, 10.0)
    deep = ideal_awgn_point(codec, images, 10.0, fade_power=np.full(4, 0.1))       # every image 10 dB down
    assert deep["psnr_db"] < flat["psnr_db"] - 2.0
    same = ideal_awgn_point(codec, images, 10.0, fade_power=np.ones(4))
    assert same["psnr_db"] == flat["psnr_db"]


def test_bench_link_cbr_curves_under_rayleigh_block_fading(tmp_path):
    data = _cifar_folder(tmp_path)
    result = bench_link("deepjscc_sr", snrs=(12,), n_images=6, data_dir=data, json_path=tmp_path / "b.json",
                        plot_path=tmp_path / "b.png", work_dir=tmp_path / "work", cbr="1/12,1/6",
                        fading="rayleigh")
    assert json.loads((tmp_path / "b.json").read_text()) == result and (tmp_path / "b.png").stat().st_size > 0
    assert result["fading"] == "rayleigh" and result["n_images"] == 6 and abs(result["cbr"] - 1 / 12) < 1e-9
    points = {(p["channel"], p["cbr"]): p for p in result["points"]}
    assert set(points) == {(c, r) for c in ("awgn_ideal", "ofdm_zmq") for r in ("1/12", "1/6")}
    assert points[("ofdm_zmq", "1/6")]["groups"] == 8 and points[("ofdm_zmq", "1/12")]["rate_index"] == 4
    # the receiver saw each image's fade: its SNR estimates follow 12 dB + |h|^2 image by image
    fades = 12 + 10 * np.log10(np.abs(block_fading_gains(6, 42)) ** 2)
    assert np.ptp(fades) > 10
    rows = [r for r in account(tmp_path / "work" / "deepjscc_sr_1-6" / "snr12") if r["status"] == "decoded"]
    assert len(rows) >= 5
    for row in rows:
        assert abs(row["snr_est_db"] - fades[row["image_id"]]) < 1.0, (row, fades)
    for channel in ("awgn_ideal", "ofdm_zmq"):
        assert points[(channel, "1/6")]["psnr_db"] > points[(channel, "1/12")]["psnr_db"] - 0.5
