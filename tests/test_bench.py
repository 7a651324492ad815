"""bench link's options on a few committed images: CBR curves of the successive-refinement codec,
Rayleigh block fading on both channels, and how lost images are scored."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gsc_blocks.bench.common import _lost_scores, ideal_awgn_point, ideal_awgn_points
from gsc_blocks.bench.link import bench_link
from gsc_blocks.core.jscc import JSCCCodec
from gsc_blocks.core.fading import block_fading_gains
from gsc_blocks.core.images import load_image
from gsc_blocks.core.refiner import refiner_for
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


def test_bench_link_refiner_curves_carry_the_steps_over_the_link(tmp_path):
    """'swinjscc+refiner' runs the diffusion refiner after the decoder on both channels; over the
    link the steps travel in the header and every decoded image reports them applied."""
    data = _cifar_folder(tmp_path, count=4)
    result = bench_link("swinjscc,swinjscc+refiner", snrs=(5,), n_images=4, data_dir=data,
                        json_path=tmp_path / "r.json", work_dir=tmp_path / "work", refine_steps="1,2")
    points = {(p["codec"], p["channel"], p["refine_steps"]): p for p in result["points"]}
    assert set(points) == {(c, ch, k) for ch in ("awgn_ideal", "ofdm_zmq")
                           for c, k in (("swinjscc", 0), ("swinjscc+refiner", 1), ("swinjscc+refiner", 2))}
    assert all("accuracy" in p for p in result["points"])
    assert points[("swinjscc+refiner", "ofdm_zmq", 2)]["refine_ms_p50"] > 0
    assert "refine_ms_p50" not in points[("swinjscc", "ofdm_zmq", 0)]
    # the rate per codec, beside the rate over all runs
    per = result["throughput"]["per_codec"]
    assert set(per) == {"swinjscc", "swinjscc+refiner_steps1", "swinjscc+refiner_steps2"}
    assert min(per.values()) <= result["throughput"]["images_per_s"] <= max(per.values()) and min(per.values()) > 0
    rows = [r for r in account(tmp_path / "work" / "swinjscc+refiner_steps2" / "snr5") if r["status"] == "decoded"]
    assert len(rows) == 4 and all(r["refine_steps"] == 2 and r["refine_steps_applied"] == 2 for r in rows)
    # the result says where it came from: commit, command, setup and every model's hashes, as checked
    prov = json.loads((tmp_path / "r.json").read_text())["provenance"]
    assert prov["setup"]["file"] == "radio_config/zmq_loopback.yaml" and prov["setup"]["link"] == "zmq"
    assert set(prov["models"]) == {"swinjscc", "refiner", "cifar_classifier"}
    card = json.loads((Path(__file__).resolve().parents[1] / "models" / "swinjscc" / "card.json").read_text())
    assert prov["models"]["swinjscc"]["encoder"] == card["files"]["encoder"]["sha256"]
    assert prov["commit"] != "unknown" and prov["command"]


def test_bench_link_refuses_a_refiner_codec_without_a_refiner(tmp_path):
    import pytest
    from gsc_blocks.core.codec import CodecError
    with pytest.raises(CodecError, match="--codec separation\\+refiner: no refiner card lists separation"):
        bench_link("separation+refiner", snrs=(5,), n_images=2, data_dir=_cifar_folder(tmp_path, 2))
    with pytest.raises(CodecError, match="--refine-steps: refine_steps 20: the refiner takes 0 to 15 steps"):
        bench_link("swinjscc+refiner", snrs=(5,), n_images=2, data_dir=_cifar_folder(tmp_path / "b", 2),
                   refine_steps="20")


def test_bench_control_accounts_every_slot_and_names_the_cheapest_fixed_policy(tmp_path):
    """bench control over the real link with a rate-adaptive codec and a semantic target: each
    policy's summary covers every image slot, each decoded slot is charged whether the receiver's
    classifier got its label right, the cheapest fixed policy that met both targets is named, and
    no full-power entry is made up when level 0 was not run."""
    from gsc_blocks.bench.control import bench_control
    data = _cifar_folder(tmp_path / "d", 4)
    result = bench_control(n_images=4, data_dir=data, work_dir=tmp_path / "work", fixed_levels=(1, 2),
                           json_path=tmp_path / "control.json", codec="swinjscc", quality_metric="accuracy_pct",
                           quality_target=50.0)
    assert json.loads((tmp_path / "control.json").read_text())["codec"] == "swinjscc"
    assert result["targets"] == {"delay_ms": 10.0, "quality": 50.0, "quality_metric": "accuracy_pct",
                                 "loss_rate": 0.05}
    slots = [json.loads(line) for line in (tmp_path / "work" / "lyapunov" / "tx_controller.jsonl").read_text()
             .splitlines()]
    decoded = [s for s in slots if not s.get("lost")]
    assert decoded and all(s["quality"] == (100.0 if s["correct"] else 0.0) for s in decoded)
    assert all(s["quality_metric"] == "accuracy_pct" for s in slots)
    assert set(result["policies"]) == {"lyapunov", "greedy"} and set(result["fixed"]) == {"fixed_1", "fixed_2"}
    for summary in [*result["policies"].values(), *result["fixed"].values()]:
        assert summary["n_images"] == 4 and summary["loss_rate"] == summary["lost"] / 4
        assert summary["lost"] == summary["lost_timeouts"] + summary["lost_no_report"] + summary["lost_decode_failed"]
    assert result["model"]["calibration"].endswith("swinjscc/calibration.json")
    cheapest = result.get("cheapest_fixed_meeting_targets")
    meeting = [s["energy_per_image"] for s in result["fixed"].values() if s["constraints_met"]]
    assert all(isinstance(s["constraints_met"], bool) for s in result["fixed"].values())
    if meeting:
        assert cheapest["policy"] in result["fixed"] and cheapest["constraints_met"]
        assert cheapest["energy_per_image"] == min(meeting)
    else:
        assert cheapest is None     # none met the targets: nothing is named


def test_ideal_points_for_several_step_counts_equal_one_point_per_step_count():
    """bench calibrate sends and decodes each image once and refines that output per step count;
    every point must equal what a separate run for its step count gives."""
    codec = JSCCCodec("swinjscc")
    refiner = refiner_for("swinjscc")
    images = [load_image(p) for p in sorted(SAMPLES.glob("cifar_*.png"))[:3]]
    together = ideal_awgn_points(codec, images, 2.0, rate_index=3, refiner=refiner, steps_list=(0, 1, 2))
    for steps in (0, 1, 2):
        alone = ideal_awgn_point(codec, images, 2.0, rate_index=3, refiner=refiner, refine_steps=steps)
        assert {k: v for k, v in together[steps].items() if k != "refine_ms_p50"} == \
            {k: v for k, v in alone.items() if k != "refine_ms_p50"}
    psnrs = [together[i]["psnr_db"] for i in range(3)]
    assert len(set(psnrs)) == 3, psnrs


def test_bench_codec_writes_the_issue_shape_and_counts_every_bit(tmp_path, camvid_data):
    from gsc_blocks.bench.camvid import bench_codec
    from gsc_blocks.core.registry import make_codec
    data = camvid_data
    result = bench_codec(["spic", "cspic", "webp"], data_dir=data, json_path=tmp_path / "c.json",
                         plot_path=tmp_path / "c.png", steps_list=(0, 1), levels={"": [0, 3]})
    assert json.loads((tmp_path / "c.json").read_text()) == result and (tmp_path / "c.png").stat().st_size > 0
    assert result["dataset"] == "camvid" and result["resolution"] == [192, 256] and result["n_images"] == 3
    assert set(result["original"]) == {"miou", "class_iou", "miou_second", "class_iou_second"}
    assert set(result["original"]["class_iou_second"]) == set(result["original"]["class_iou"])
    assert {"camvid_segmenter", "camvid_segmenter_b", "spic_sr"} <= set(result["models"])
    assert len(result["commit"].split("-")[0]) == 40 and result["command"]
    keys = {"rate_index", "bpp", "miou", "miou_second", "class_iou", "class_iou_second", "psnr_db", "ms_ssim", "fsd",
            "encode_ms", "decode_ms"}
    by = {e["codec"]: e["points"] for e in result["codecs"]}
    for points in by.values():
        assert all(keys <= set(p) for p in points)
    assert all("extra_bpp" in p for p in by["cspic"])
    # SPIC's bpp is its payload's bytes, every one: recompute it from the codec
    spic = make_codec("spic")
    images = [np.asarray(Image.open(f).convert("RGB")) for f in sorted((data / "camvid" / "test").glob("*.webp"))]
    level3 = [p for p in by["spic"] if p["rate_index"] == 3 and p["steps"] == 1][0]
    assert level3["bpp"] == round(np.mean([len(spic.encode_level(im, 3)) * 8 for im in images]) / (192 * 256), 5)
    # regeneration (1 step) is judged better by the segmenter than the upsampled coarse image (0 steps)
    for level in (0, 3):
        p0, p1 = (next(p for p in by["spic"] if p["rate_index"] == level and p["steps"] == k) for k in (0, 1))
        assert p1["miou"] > p0["miou"] and p1["bpp"] == p0["bpp"]
    # C-SPIC adds its class masks' bits on top of SPIC's at the same level
    for level in (0, 3):
        s, c = (next(p for p in by[n] if p["rate_index"] == level and p["steps"] == 1) for n in ("spic", "cspic"))
        assert c["bpp"] == pytest.approx(s["bpp"] + c["extra_bpp"], abs=2e-5)
        assert sum(c["extra_bpp_per_class"].values()) == pytest.approx(c["extra_bpp"], abs=5e-5)


def test_bench_link_camvid_at_one_cbr_for_every_codec(tmp_path, camvid_data):
    """SPIC and swinjscc at CBR 1/24 over both channels, with mIoU; over the link the receiver decodes
    SPIC at that CBR (codec.digital_cbr travels to both processes)."""
    data = camvid_data
    result = bench_link("spic,swinjscc", snrs=(15,), n_images=2, data_dir=data, json_path=tmp_path / "l.json",
                        dataset="camvid", cbr="1/24", work_dir=tmp_path / "work", refine_steps="1")
    assert result["cbr"] == pytest.approx(1 / 24) and set(result["accuracy_original"]) == {"miou", "miou_second"}
    points = {(p["codec"], p["channel"]): p for p in result["points"]}
    assert set(points) == {(c, ch) for c in ("spic", "swinjscc") for ch in ("awgn_ideal", "ofdm_zmq")}
    spic_link = points[("spic", "ofdm_zmq")]
    assert spic_link["lost"] == 0 and spic_link["refine_steps"] == 1
    from gsc_blocks.core.registry import make_codec
    at_1_24 = make_codec("spic", options={"cbr": 1 / 24})
    assert spic_link["payload_bytes"] == at_1_24.capacity(192, 256, spic_link["rate_index"]) + 4
    assert spic_link["psnr_db"] == pytest.approx(points[("spic", "awgn_ideal")]["psnr_db"], abs=0.01)
    assert all(0 <= p["miou"] <= 1 for p in result["points"])


def test_bench_control_on_camvid_runs_sqgan_with_miou_and_its_kept_fractions(tmp_path, camvid_data):
    """bench control with SQ-GAN: CamVid frames (repeated to the slot count) through the closed loop at
    the table's CBR, each slot charged in mIoU %, each frame sent at an MCS of SQ-GAN's table."""
    from gsc_blocks.bench.control import bench_control
    result = bench_control(n_images=4, data_dir=camvid_data, work_dir=tmp_path / "work", fixed_levels=(),
                           json_path=tmp_path / "control.json", codec="sqgan", quality_metric="miou_pct",
                           quality_target=34.0, overrides=[f"codec.digital_cbr={1 / 24}",
                                                           "controller.delay_target_ms=150",
                                                           "controller.slot_timeout_s=3"])
    assert result["dataset"] == "camvid" and result["codec"] == "sqgan"
    assert result["model"]["calibration"].endswith("sqgan/calibration.json")
    table = json.loads((REPO / "models" / "sqgan" / "calibration.json").read_text())
    for policy in ("lyapunov", "greedy"):
        assert result["policies"][policy]["n_images"] == 4
        slots = [json.loads(line) for line in (tmp_path / "work" / policy / "tx_controller.jsonl").read_text()
                 .splitlines()]
        assert len(slots) == 4 and all(s["quality_metric"] == "miou_pct" for s in slots)
        assert all(str(s["rate_index"]) in table["rates"] for s in slots if not s.get("lost"))
        assert all(100 * table["lost"]["miou"] <= s["quality"] <= 100 for s in slots)


def test_bench_soak_samples_both_processes_and_accounts_every_image(tmp_path):
    """A short soak (8 images, round four times): memory and descriptors of both processes
    sampled while they run, every image decoded or lost, growth measured from the 8th image."""
    from gsc_blocks.bench.soak import bench_soak, rss_growth
    data = _cifar_folder(tmp_path / "d", 8)
    result = bench_soak(32, 20.0, data, json_path=tmp_path / "soak.json", plot_path=tmp_path / "soak.png",
                        work_dir=tmp_path / "work", command="test", growth_from=8)
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["n_images"] == 32 and saved["decoded"] + saved["lost"] == 32 and saved["unaccounted"] == 0
    assert saved["decoded"] >= 31 and saved["command"] == "test" and saved["commit"]
    rx_rss = [s["rss_mb"]["rx"] for s in saved["samples"] if s["rss_mb"]["rx"] is not None]
    tx_fds = [s["fds"]["tx"] for s in saved["samples"] if s["fds"]["tx"] is not None]
    assert max(rx_rss) > 50 and max(tx_fds) > 2      # ORT and GNU Radio loaded; sockets open
    assert set(saved["rss_growth"]) == {"tx", "rx"} and (tmp_path / "soak.png").is_file()
    assert "deepjscc" in result["provenance"]["models"]
    # bench link's rate: first image sent to last decoded; wall_s also holds the start-up
    sent = [json.loads(line)["t_sent"] for line in (tmp_path / "work" / "tx_manifest.jsonl").read_text().splitlines()]
    done = [json.loads(line)["t_decoded"] for line in (tmp_path / "work" / "received.jsonl").read_text().splitlines()]
    span = max(done) - min(sent)
    assert saved["images_per_s"] == pytest.approx(len(done) / span) and saved["wall_s"] > span
    samples = [{"images": n, "rss_mb": {"tx": rss, "rx": rss}} for n, rss in ((0, 90.0), (8, 100.0), (19, 104.0),
                                                                              (20, 150.0))]
    # to the sample before the last image, not the end-of-run reconciliation
    assert rss_growth(samples, "rx", 8) == pytest.approx(0.04) and rss_growth(samples, "rx", 50) is None
