"""Benchmarks: `gsc bench link` runs a codec through an ideal AWGN channel and
through the two-process GNU Radio ZMQ loopback at each SNR, in one run."""
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .apps.run import run_link
from .core.codec import JSCCCodec
from .core.images import load_image
from .core.metrics import ms_ssim, psnr_db
from .core.report import account, summarize

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets"


def cifar_test_images(data_dir, count):
    folder = Path(data_dir) / "cifar10" / "test"
    files = sorted(folder.glob("*.webp"), key=lambda p: int(p.stem.split("_")[0]))
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 test images in {folder}: pass --data DIR (the folder holding "
                                "cifar10/, ../shared/datasets by default)")
    return files[:count]


def ideal_awgn_point(codec: JSCCCodec, images, snr_db: float, seed: int = 0) -> dict:
    """Encoder -> complex AWGN at snr_db on unit-power symbols -> decoder told the true SNR."""
    rng = np.random.default_rng(seed)
    psnrs, ssims = [], []
    for image in images:
        symbols = codec.encode(image, snr_db)
        noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) \
            * np.sqrt(10 ** (-snr_db / 10) / 2)
        decoded = codec.decode((symbols + noise).astype(np.complex64), *image.shape[:2], snr_db)
        psnrs.append(psnr_db(image, decoded))
        ssims.append(ms_ssim(image, decoded))
    return {"psnr_db": float(np.mean(psnrs)), "ms_ssim": float(np.mean(ssims)), "lost": 0}


def ofdm_zmq_point(config, files, snr_db, out_dir, mean_image) -> tuple[dict, dict]:
    out = run_link(config, files, out_dir, [f"channel.snr_db={snr_db}", f"codec.encoder_snr_db={snr_db}"])
    rows = account(out)
    summary = summarize(rows, out)
    psnrs, ssims = [], []
    for row in rows:
        if row["status"] == "decoded" and row.get("psnr_db") is not None:
            psnrs.append(row["psnr_db"])
            ssims.append(row["ms_ssim"])
        else:   # a lost image counts as the dataset's mean image, as the papers do
            original = load_image(row["path"])
            psnrs.append(psnr_db(original, mean_image))
            ssims.append(ms_ssim(original, mean_image))
    point = {"psnr_db": float(np.mean(psnrs)), "ms_ssim": float(np.mean(ssims)),
             "snr_est_db": summary.get("snr_est_db"), "lost": summary["lost"],
             "fragments_lost": summary["fragments_lost"]}
    return point, summary


def bench_link(codec_name="deepjscc", snrs=(0, 5, 10, 15, 20), n_images=200, data_dir=None,
               config="radio_config/zmq_loopback.yaml", json_path=None, plot_path=None, work_dir="out/bench_link"):
    data_dir = Path(data_dir or DEFAULT_DATA)
    files = cifar_test_images(data_dir, n_images)
    images = [load_image(f) for f in files]
    mean_image = np.rint(np.mean(images, axis=0)).astype(np.uint8)
    codec = JSCCCodec(codec_name)
    result = {"codec": codec_name, "cbr": codec.cbr, "dataset": f"CIFAR-10 test (first {len(files)} images)",
              "n_images": len(files), "points": [],
              "notes": "ofdm_zmq: TX and RX as two processes over ZMQ on 127.0.0.1, gr-channels AWGN at the "
                       "per-carrier SNR; snr_est_db is the receiver's preamble estimate; a lost image counts "
                       "as the dataset mean image in psnr_db/ms_ssim"}
    summaries = []
    bar = tqdm(total=2 * len(snrs), desc="bench link", unit="point")
    for snr in snrs:
        point = ideal_awgn_point(codec, images, float(snr))
        result["points"].append({"snr_db": float(snr), "channel": "awgn_ideal", **point})
        bar.update()
        point, summary = ofdm_zmq_point(config, files, float(snr), Path(work_dir) / f"snr{snr}", mean_image)
        result["points"].append({"snr_db": float(snr), "channel": "ofdm_zmq", **point})
        summaries.append(summary)
        bar.set_postfix(snr=snr, psnr=f"{point['psnr_db']:.2f}")
        bar.update()
    bar.close()
    seconds = sum(s.get("link_seconds", 0) for s in summaries)
    lat = [s for s in summaries if "rx_latency_ms_p50" in s]
    result["throughput"] = {
        "samples_per_s": sum(s.get("tx_samples", 0) for s in summaries) / max(seconds, 1e-9),
        "images_per_s": sum(s["decoded"] for s in summaries) / max(seconds, 1e-9),
        "latency_ms_p50": float(np.median([s["rx_latency_ms_p50"] for s in lat])) if lat else None,
        "latency_ms_p99": float(np.max([s["rx_latency_ms_p99"] for s in lat])) if lat else None,
        "e2e_latency_ms_p50": float(np.median([s["latency_ms_p50"] for s in lat])) if lat else None,
        "definition": "rates over the link's wall time (first image sent to last image decoded, two processes "
                      "on one host); latency_ms: receiver, first fragment in to image decoded; e2e_latency_ms: "
                      "image handed to the encoder to image decoded, with every image queued at once",
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    if plot_path:
        plot_link(result, plot_path)
    return result


def plot_link(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for channel, style in (("awgn_ideal", "o--"), ("ofdm_zmq", "s-")):
        pts = [p for p in result["points"] if p["channel"] == channel]
        snr = [p["snr_db"] for p in pts]
        axes[0].plot(snr, [p["psnr_db"] for p in pts], style, label=channel)
        axes[1].plot(snr, [p["ms_ssim"] for p in pts], style, label=channel)
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_ylabel("MS-SSIM")
    for ax in axes:
        ax.set_xlabel("SNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['codec']} (CBR {result['cbr']:.3f}), {result['dataset']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_link_table(result) -> str:
    lines = ["| SNR (dB) | channel | PSNR (dB) | MS-SSIM | SNR est (dB) | lost |", "| --- | --- | --- | --- | --- | --- |"]
    for p in result["points"]:
        est = f"{p['snr_est_db']:.2f}" if p.get("snr_est_db") is not None else "-"
        lines.append(f"| {p['snr_db']:.0f} | {p['channel']} | {p['psnr_db']:.2f} | {p['ms_ssim']:.4f} | {est} | {p['lost']} |")
    return "\n".join(lines)
