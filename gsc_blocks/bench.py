"""Benchmarks: `gsc bench link` runs a codec through an ideal AWGN channel and
through the two-process GNU Radio ZMQ loopback at each SNR, in one run."""
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .apps.run import run_link
from .core.codec import CodecError, make_codec
from .core.images import load_image
from .core.metrics import ms_ssim, psnr_db
from .core.report import account, summarize

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets"


def write_json(path, data):
    """A benchmark's result as indented JSON, its folder made if need be."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def cifar_test_images(data_dir, count):
    folder = Path(data_dir) / "cifar10" / "test"
    files = sorted(folder.glob("*.webp"), key=lambda p: int(p.stem.split("_")[0]))
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 test images in {folder}: pass --data DIR (the folder holding "
                                "cifar10/, ../shared/datasets by default)")
    return files[:count]


def kodak_images(data_dir, count=24):
    folder = Path(data_dir) / "kodak"
    files = sorted(folder.glob("kodim*.png"))
    if not files:
        raise FileNotFoundError(f"no Kodak images in {folder}: pass --data DIR (the folder holding kodak/, "
                                "../shared/datasets by default)")
    return files[:count]


def dataset_files(dataset, data_dir, count):
    if dataset == "cifar10":
        return cifar_test_images(data_dir, count)
    if dataset == "kodak":
        return kodak_images(data_dir, count)
    raise ValueError(f"--dataset {dataset!r}: expected cifar10 or kodak")


def mean_image_of(images):
    """The dataset mean image; for images of several sizes (Kodak: landscape and portrait),
    the mean over the images of the first one's size."""
    same = [im for im in images if im.shape == images[0].shape]
    return np.rint(np.mean(same, axis=0)).astype(np.uint8)


def _lost_scores(original, mean_image):
    """A lost image counts as the dataset's mean image, as the papers do (its transpose for an image
    of the other orientation, a constant image of the mean colour for any other size)."""
    if mean_image.shape != original.shape:
        mean_image = mean_image.transpose(1, 0, 2) if mean_image.shape[:2] == original.shape[1::-1] else \
            np.broadcast_to(np.rint(mean_image.mean(axis=(0, 1))).astype(np.uint8), original.shape)
    return psnr_db(original, mean_image), ms_ssim(original, mean_image)


def _accuracy(judge, received):
    """Top-1 accuracy of the classifier on the received images (judge = (classifier, labels))."""
    if judge is None:
        return {}
    classifier, labels = judge
    return {"accuracy": float(np.mean(classifier.predict(np.stack(received)) == labels))}


def ideal_awgn_point(codec, images, snr_db: float, mean_image=None, rate_index: int = 0, seed: int = 0,
                     judge=None, fade_power=None, refiner=None, refine_steps: int = 0) -> dict:
    """Encoder -> complex AWGN at snr_db on unit-power symbols -> decoder told the true SNR.
    An image the codec refuses (byte budget) or cannot decode (CRC) is lost.
    fade_power: |h|^2 per image (block fading): the encoder knows only snr_db, the
    decoder gets the image's true SNR (perfect receiver CSI).
    refiner, refine_steps: the diffusion refiner after the decoder (seeded by the image's index)."""
    return ideal_awgn_points(codec, images, snr_db, mean_image, rate_index, seed, judge, fade_power, refiner,
                             (refine_steps,))[refine_steps]


def ideal_awgn_points(codec, images, snr_db: float, mean_image=None, rate_index: int = 0, seed: int = 0,
                      judge=None, fade_power=None, refiner=None, steps_list=(0,)) -> dict:
    """ideal_awgn_point for several refiner step counts at once: {steps: point}. Each image is
    encoded, sent and decoded once; only the refiner runs per step count, on the same decoder
    output, so every point equals the one ideal_awgn_point gives for its step count."""
    rng = np.random.default_rng(seed)
    scores = {steps: {"psnr": [], "ssim": [], "received": [], "refine_ms": []} for steps in steps_list}
    lost, sources = 0, {}
    for i, image in enumerate(images):
        try:
            symbols = codec.encode(image, snr_db, rate_index)
            source = getattr(codec, "last_source_codec", None)
            sources[source] = sources.get(source, 0) + 1
            rx_snr = snr_db if fade_power is None else snr_db + 10 * np.log10(max(float(fade_power[i]), 1e-12))
            noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) \
                * np.sqrt(10 ** (-rx_snr / 10) / 2)
            decoded = codec.decode((symbols + noise).astype(np.complex64), *image.shape[:2], rx_snr, rate_index)
        except (ValueError, CodecError):
            lost += 1
            p, m = _lost_scores(image, mean_image)
            for score in scores.values():
                score["psnr"].append(p)
                score["ssim"].append(m)
                score["received"].append(mean_image)
            continue
        for steps, score in scores.items():
            out = decoded
            if refiner is not None and steps:
                start = time.perf_counter()
                out = refiner.refine(decoded, rx_snr, steps, seed=i)
                score["refine_ms"].append((time.perf_counter() - start) * 1e3)
            score["psnr"].append(psnr_db(image, out))
            score["ssim"].append(ms_ssim(image, out))
            score["received"].append(out)
    points = {}
    for steps, score in scores.items():
        point = {"psnr_db": float(np.mean(score["psnr"])), "ms_ssim": float(np.mean(score["ssim"])), "lost": lost,
                 **_accuracy(judge, score["received"])}
        if score["refine_ms"]:
            point["refine_ms_p50"] = float(np.median(score["refine_ms"]))
        if None not in sources:
            point["source_codec"] = ",".join(f"{k}:{v}" for k, v in sorted(sources.items())) or "none (budget)"
        points[steps] = point
    return points


def ofdm_zmq_point(config, files, snr_db, out_dir, mean_image, overrides=(), judge=None) -> tuple[dict, dict]:
    out = run_link(config, files, out_dir, [f"channel.snr_db={snr_db}", f"codec.encoder_snr_db={snr_db}",
                                            *overrides])
    rows = account(out)
    summary = summarize(rows, out)
    psnrs, ssims, received = [], [], []
    for row in rows:
        if row["status"] == "decoded" and row.get("psnr_db") is not None:
            psnrs.append(row["psnr_db"])
            ssims.append(row["ms_ssim"])
            received.append(load_image(Path(out) / row["file"]))
        else:
            p, m = _lost_scores(load_image(row["path"]), mean_image)
            psnrs.append(p)
            ssims.append(m)
            received.append(mean_image)
    point = {"psnr_db": float(np.mean(psnrs)), "ms_ssim": float(np.mean(ssims)),
             "snr_est_db": summary.get("snr_est_db"), "lost": summary["lost"],
             "fragments_lost": summary["fragments_lost"], **_accuracy(judge, received)}
    refine_ms = [row["refine_ms"] for row in rows if row.get("refine_ms") is not None]
    if refine_ms:
        point["refine_ms_p50"] = float(np.median(refine_ms))
    return point, summary


def oracle_mcs(codec, images, snr_db, mean_image, n_probe=100, fade_power=None) -> int:
    """The MCS with the best mean PSNR on the ideal channel (first n_probe images)."""
    from .core.separation import MCS_TABLE
    probe = images[:n_probe]
    scores = [ideal_awgn_point(codec, probe, snr_db, mean_image, index, fade_power=fade_power)["psnr_db"]
              for index in range(len(MCS_TABLE))]
    return int(np.argmax(scores))


REFINER_SUFFIX = "+refiner"


def _series(codecs, mcs_policies, cbrs, refine_steps=(1,)):
    """(codec name, MCS policy or CBR or None, refine steps) per curve: separation gets one curve
    per MCS policy, a successive-refinement codec one per CBR (its full rate by default), a
    '<codec>+refiner' one per number of refinement steps."""
    for name, codec in codecs.items():
        steps_list = refine_steps if name.endswith(REFINER_SUFFIX) else (0,)
        for steps in steps_list:
            if name.startswith("separation"):
                for policy in mcs_policies:
                    yield name, policy, steps
            elif getattr(codec, "rate_count", 1) > 1 and cbrs:
                for cbr in cbrs:
                    yield name, cbr, steps
            else:
                yield name, None, steps


def _codec_and_refiner(name):
    """'swinjscc' -> (codec, None); 'swinjscc+refiner' -> (codec, the refiner trained on swinjscc)."""
    from .core.refiner import refiner_for
    base = name[:-len(REFINER_SUFFIX)] if name.endswith(REFINER_SUFFIX) else name
    codec = make_codec(base)
    if base == name:
        return codec, None
    refiner = refiner_for(base)
    if refiner is None:
        raise CodecError(f"--codec {name}: no refiner card lists {base} among the codecs it was trained on "
                         "(models/refiner/card.json 'codecs'); train one with gsc_models.train_refiner")
    return codec, refiner


def _check_refine_steps(refiner, steps_list):
    """A step count the refiner cannot take stops here, before any run (no refiner: nothing to check)."""
    for k in steps_list if refiner is not None else []:
        try:
            refiner.check_steps(k)
        except ValueError as err:
            raise CodecError(f"--refine-steps: {err}") from None


def bench_link(codec_name="deepjscc", snrs=(0, 5, 10, 15, 20), n_images=200, data_dir=None,
               config="radio_config/zmq_loopback.yaml", json_path=None, plot_path=None, work_dir="out/bench_link",
               mcs="oracle", cbr=None, fading="none", dataset="cifar10", refine_steps="1"):
    """codec_name: one codec or several, comma-separated ('deepjscc,separation').
    mcs (separation only): 'oracle' (best MCS per SNR on the ideal channel), an MCS name or
    index, or several comma-separated, each its own curve.
    cbr (successive-refinement codecs only): CBRs like '1/24,1/12,1/6', each its own curve.
    fading: 'none' or 'rayleigh' (block fading, one Rayleigh gain per image, the same gains
    on the ideal channel and over the link). dataset: cifar10 (test) or kodak.
    '<codec>+refiner' adds the diffusion refiner after the decoder, refine_steps ('1,4') DDIM
    steps, each its own curve; over the link the steps travel in the header."""
    from .core.config import load_config
    from .core.fading import block_fading_gains
    from .core.separation import MCS_TABLE, mcs_index
    if fading not in ("none", "rayleigh"):
        raise ValueError(f"--fading {fading!r}: expected none or rayleigh")
    data_dir = Path(data_dir or DEFAULT_DATA)
    files = dataset_files(dataset, data_dir, n_images)
    images = [load_image(f) for f in files]
    mean_image = mean_image_of(images)
    fade_power = None
    if fading == "rayleigh":
        fade_power = np.abs(block_fading_gains(len(files), load_config(config)["channel"]["seed"])) ** 2
    names = [n.strip() for n in codec_name.split(",") if n.strip()]
    policies = [m.strip() for m in str(mcs).split(",") if m.strip()]
    cbrs = [c.strip() for c in str(cbr or "").split(",") if c.strip()]
    for policy in policies:
        if policy != "oracle":
            try:
                mcs_index(policy)           # a bad name stops here, before any run
            except ValueError as err:
                raise CodecError(f"--mcs: {err}") from None
    pairs = {name: _codec_and_refiner(name) for name in names}
    codecs = {name: pair[0] for name, pair in pairs.items()}
    steps_list = [int(k) for k in str(refine_steps).split(",") if k.strip()]
    for name, (_, refiner) in pairs.items():
        _check_refine_steps(refiner, steps_list)
    for name, codec in codecs.items():
        for c in cbrs if getattr(codec, "rate_count", 1) > 1 else []:
            try:
                codec.rate_index_for_cbr(c)  # a CBR the codec lacks stops here, before any run
            except ValueError as err:
                raise CodecError(f"--cbr: {err}") from None
    judge, accuracy_original = None, None
    if dataset == "cifar10":
        from .core.semantic import Classifier, cifar_label
        classifier = Classifier()
        judge = (classifier, np.array([classifier.label_index(cifar_label(f)) for f in files]))
        accuracy_original = _accuracy(judge, images)["accuracy"]
    series = list(_series(codecs, policies, cbrs, steps_list))
    first = codecs[names[0]]
    result = {"codec": codec_name,
              "cbr": first.cbr_at(first.rate_index_for_cbr(cbrs[0])) if cbrs and getattr(first, "rate_count", 1) > 1 else first.cbr,
              "dataset": f"CIFAR-10 test (first {len(files)} images)" if dataset == "cifar10"
              else f"Kodak ({len(files)} images, 768x512 and 512x768)",
              "n_images": len(files), "fading": fading, "points": [],
              "classifier": "cifar_classifier (models/cifar_classifier/card.md)" if judge else None,
              "accuracy_original": accuracy_original,
              "notes": "ofdm_zmq: TX and RX as two processes over ZMQ on 127.0.0.1, gr-channels AWGN at the "
                       "per-carrier SNR; snr_est_db is the receiver's preamble estimate; a lost image counts "
                       "as the dataset mean image in psnr_db/ms_ssim; separation: mcs 'oracle' picks the MCS "
                       "with the best PSNR on the ideal channel over the first 100 images at each SNR; accuracy: "
                       "top-1 of the CIFAR-10 classifier on the received images (a lost image: the mean image), "
                       "accuracy_original: on the originals; fading rayleigh: block fading, one CN(0,1) gain per "
                       "image (seeded by channel.seed), the encoder conditioned on the mean SNR, the decoder on "
                       "the image's SNR (its true value on the ideal channel, the receiver's estimate over the "
                       "link)"}
    summaries = []
    bar = tqdm(total=2 * len(snrs) * len(series), desc="bench link", unit="point")
    for snr in snrs:
        for name, policy, steps in series:
            codec, refiner = pairs[name]
            extra = {"codec": name, "refine_steps": steps}
            overrides, rate = [f"codec.name={codec.name}", f"codec.refine_steps={steps}"], 0
            if fading != "none":
                overrides.append("channel.fading=rayleigh_block")
            if policy is not None and name.startswith("separation"):
                rate = oracle_mcs(codec, images, float(snr), mean_image, fade_power=fade_power) \
                    if policy == "oracle" else mcs_index(policy)
                h, w = images[0].shape[:2]
                extra.update(mcs=MCS_TABLE[rate].name, mcs_policy=policy,
                             payload_bytes=codec.payload_bytes(h, w, rate))
                overrides.append(f"codec.rate_index={rate}")
            elif policy is not None:
                rate = codec.rate_index_for_cbr(policy)
                extra.update(cbr=codec.cbr_label(rate), rate_index=rate, groups=codec.groups_sent(rate))
                overrides.append(f"codec.rate_index={rate}")
            point = ideal_awgn_point(codec, images, float(snr), mean_image, rate, judge=judge, fade_power=fade_power,
                                     refiner=refiner, refine_steps=steps)
            result["points"].append({"snr_db": float(snr), "channel": "awgn_ideal", **extra, **point})
            bar.update()
            tag = name if policy is None else f"{name}_{policy.replace('/', '-')}"
            tag += f"_steps{steps}" if refiner is not None else ""
            point, summary = ofdm_zmq_point(config, files, float(snr), Path(work_dir) / tag / f"snr{snr}",
                                            mean_image, overrides, judge)
            if "source_codec" in result["points"][-1]:
                point["source_codec"] = result["points"][-1]["source_codec"]
            result["points"].append({"snr_db": float(snr), "channel": "ofdm_zmq", **extra, **point})
            summaries.append(summary)
            bar.set_postfix(snr=snr, codec=tag, psnr=f"{point['psnr_db']:.2f}")
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
        write_json(json_path, result)
    if plot_path:
        plot_link(result, plot_path)
    return result


def _curve_label(p):
    label = p.get("codec", "")
    if p.get("mcs_policy"):
        label += f" ({p['mcs_policy']})"
    if p.get("groups"):
        label += f" CBR {p['cbr']}"
    if p.get("refine_steps"):
        label += f" {p['refine_steps']} steps"
    return f"{label} {p['channel']}".strip()


def plot_link(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = sorted({p["groups"] for p in result["points"] if p.get("groups")})
    fig, axes = plt.subplots(1, 3 if len(groups) > 1 else 2, figsize=(15 if len(groups) > 1 else 10, 4))
    curves = {}
    for p in result["points"]:
        curves.setdefault(_curve_label(p), []).append(p)
    for label, pts in curves.items():
        style = "o--" if pts[0]["channel"] == "awgn_ideal" else "s-"
        snr = [p["snr_db"] for p in pts]
        axes[0].plot(snr, [p["psnr_db"] for p in pts], style, label=label)
        axes[1].plot(snr, [p["ms_ssim"] for p in pts], style, label=label)
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_ylabel("MS-SSIM")
    for ax in axes[:2]:
        ax.set_xlabel("SNR (dB)")
    if len(groups) > 1:
        # successive refinement: PSNR against the symbol groups received, one line per SNR and channel
        lines = {}
        for p in result["points"]:
            if p.get("groups"):
                lines.setdefault((p["channel"], p["snr_db"]), []).append((p["groups"], p["psnr_db"]))
        for (channel, snr), pts in sorted(lines.items()):
            pts.sort()
            axes[2].plot([g for g, _ in pts], [v for _, v in pts], "o--" if channel == "awgn_ideal" else "s-",
                         label=f"{snr:g} dB {channel}")
        axes[2].set_xlabel("symbol groups received")
        axes[2].set_ylabel("PSNR (dB)")
        axes[2].legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    title = f"{result['codec']} (CBR {result['cbr']:.3f}), {result['dataset']}"
    if result.get("fading", "none") != "none":
        title += f", {result['fading']} block fading"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_link_table(result) -> str:
    lines = ["| SNR (dB) | codec | channel | MCS or CBR | refine steps | PSNR (dB) | MS-SSIM | accuracy | "
             "SNR est (dB) | lost |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in result["points"]:
        est = f"{p['snr_est_db']:.2f}" if p.get("snr_est_db") is not None else "-"
        acc = "-" if p.get("accuracy") is None else f"{p['accuracy']:.3f}"
        mcs = f"{p['mcs']} ({p['mcs_policy']}, {p['payload_bytes']} B)" if p.get("mcs") else \
            f"CBR {p['cbr']} ({p['groups']} groups)" if p.get("groups") else "-"
        steps = f"{p.get('refine_steps', 0)}" + (f" ({p['refine_ms_p50']:.0f} ms)" if p.get("refine_ms_p50") else "")
        lines.append(f"| {p['snr_db']:.0f} | {p.get('codec', result['codec'])} | {p['channel']} | {mcs} | {steps} | "
                     f"{p['psnr_db']:.2f} | {p['ms_ssim']:.4f} | {acc} | {est} | "
                     f"{p['lost']} |")
    return "\n".join(lines)


def bench_calibrate(codec_name="deepjscc", snrs=None, n_images=300, data_dir=None, out_path=None,
                    refine_steps=None):
    """Calibration table for the controller, per rate (every rate index of a successive-refinement
    codec, the one rate of the others) and per refiner step count: ideal-AWGN PSNR, MS-SSIM and
    classifier accuracy per SNR, and the median decode time (decoder plus refiner). "lost" holds
    the same metrics of the dataset mean image, what a lost image is charged.

    refine_steps: the refiner step counts to measure (default 0, 1, 2 when a refiner is trained
    for the codec, else 0 alone)."""
    from .core.refiner import refiner_for
    from .core.semantic import Classifier, cifar_label
    snrs = list(snrs or np.arange(-10.0, 32.5, 2.5))
    files = cifar_test_images(Path(data_dir or DEFAULT_DATA), n_images)
    images = [load_image(f) for f in files]
    mean_image = mean_image_of(images)
    codec = make_codec(codec_name)
    refiner = refiner_for(codec_name)
    steps_list = sorted({int(k) for k in (refine_steps if refine_steps is not None else
                                          ((0, 1, 2) if refiner is not None else (0,)))})
    if any(steps_list) and refiner is None:
        raise CodecError(f"--refine-steps {','.join(map(str, steps_list))}: no refiner card lists {codec_name} "
                         "(models/refiner/card.json 'codecs'); calibrate with --refine-steps 0")
    _check_refine_steps(refiner, steps_list)
    classifier = Classifier()
    judge = (classifier, np.array([classifier.label_index(cifar_label(f)) for f in files]))
    lost = [_lost_scores(image, mean_image) for image in images]
    rate_indexes = range(getattr(codec, "rate_count", 1))
    rates = {}
    bar = tqdm(total=len(snrs) * len(rate_indexes), desc="calibrate", unit="SNR point")
    for rate in rate_indexes:
        symbols = codec.encode(images[0], 10.0, rate)
        rates[str(rate)] = {"symbols": int(symbols.size), "steps": {}}
        curves = {steps: {"psnr_db": [], "ms_ssim": [], "accuracy": []} for steps in steps_list}
        for s in snrs:
            points = ideal_awgn_points(codec, images, float(s), mean_image, rate_index=rate, judge=judge,
                                       refiner=refiner, steps_list=steps_list)
            for steps, point in points.items():
                for key, curve in curves[steps].items():
                    curve.append(round(point[key], 4 if key == "psnr_db" else 5))
            bar.update()
        for steps in steps_list:
            timings = []
            for i, image in enumerate(images[:50]):
                start = time.perf_counter()
                decoded = codec.decode(symbols, *image.shape[:2], 10.0, rate)
                if steps:
                    refiner.refine(decoded, 10.0, steps, seed=i)
                timings.append((time.perf_counter() - start) * 1e3)
            rates[str(rate)]["steps"][str(steps)] = {**curves[steps], "decode_ms": round(float(np.median(timings)), 3)}
    bar.close()
    table = {"codec": codec_name, "dataset": f"CIFAR-10 test, first {len(files)} images", "channel": "ideal AWGN",
             "refiner": refiner.name if refiner is not None and any(steps_list) else None,
             "classifier": classifier.card.get("name", "cifar_classifier"),
             "lost": {"psnr_db": round(float(np.mean([p for p, _ in lost])), 4),
                      "ms_ssim": round(float(np.mean([m for _, m in lost])), 5),
                      "accuracy": round(_accuracy(judge, [mean_image] * len(images))["accuracy"], 5),
                      "definition": "the metrics of the dataset mean image, what a lost image is charged"},
             "snr_db": [float(s) for s in snrs], "rates": rates}
    if out_path:
        write_json(out_path, table)
    return table


def _policy_summary(folder: Path, targets: dict) -> dict:
    slots = [json.loads(l) for l in (folder / "tx_controller.jsonl").read_text().splitlines() if l.strip()]
    energy = float(np.mean([s["energy"] for s in slots]))
    delay = float(np.mean([s["delay_ms"] for s in slots]))
    quality = float(np.mean([s["quality"] for s in slots]))
    met = quality >= targets["quality"] * 0.98 and delay <= targets["delay_ms"] * 1.02
    steps = [s.get("refine_steps", 0) for s in slots if not s.get("lost")]
    return {"energy_per_image": energy, "avg_delay_ms": delay, "avg_quality": quality, "constraints_met": met,
            "n_images": len(slots), "lost": int(sum(1 for s in slots if s.get("lost"))),
            "refined": int(sum(1 for k in steps if k)),
            "avg_refine_steps": float(np.mean(steps)) if steps else 0.0}, slots


def model_bound(config, trace, overrides=()) -> dict:
    """What the controller's own cost model says is possible on this trace: the clairvoyant
    bound (every slot's SNR known in advance) and each fixed action, with the saving of the
    one over the cheapest fixed action that meets both targets in the model (an image the
    model expects lost costs the lost quality and the slot timeout as its delay)."""
    from .apps.flowgraphs import calibration_path
    from .apps.run import parse_overrides
    from .core.config import load_config
    from .core.controller import CalibrationTable, CostModel, clairvoyant_bound
    cfg = load_config(config, parse_overrides(overrides))
    ctrl = cfg["controller"]
    table = CalibrationTable.load(calibration_path(cfg), ctrl["quality_metric"])
    model = CostModel(table, loss_snr_db=ctrl["loss_snr_db"], lost_quality=ctrl["lost_quality"],
                      lost_delay_ms=ctrl["slot_timeout_s"] * 1e3, loss_width_db=ctrl["loss_width_db"])
    actions = table.actions(ctrl["power_levels"], ctrl["refine_steps"])
    q_target, d_target = ctrl["quality_target"], ctrl["delay_target_ms"]
    # the same 2 % tolerance the policies are judged with, in the adaptive policy's favour
    bound = clairvoyant_bound(model, actions, trace, q_target * 0.98, d_target * 1.02)
    per_slot = [model.costs_many(actions, float(snr)) for snr in trace]
    fixed = {}
    for i, a in enumerate(actions):
        fixed[f"rate{a.rate_index}_power{a.power_level}_steps{a.refine_steps}"] = {
            "energy_per_image": float(np.mean([c.energy[i] for c in per_slot])),
            "avg_quality": float(np.mean([c.quality[i] for c in per_slot])),
            "avg_delay_ms": float(np.mean([c.delay_ms[i] for c in per_slot]))}
    meeting = {k: v for k, v in fixed.items() if v["avg_quality"] >= q_target * 0.98
               and v["avg_delay_ms"] <= max(d_target * 1.02, bound.get("delay_floor_ms", 0.0))}
    out = {"calibration": calibration_path(cfg), "clairvoyant_bound": bound, "fixed_actions": fixed}
    if meeting and bound.get("feasible"):
        name = min(meeting, key=lambda k: meeting[k]["energy_per_image"])
        out["cheapest_fixed_meeting_targets"] = name
        out["bound_saving_vs_cheapest_fixed"] = 1 - bound["energy_per_image"] / meeting[name]["energy_per_image"]
    return out


def bench_control(trace_path=None, n_images=2000, V=2e4, data_dir=None, config="radio_config/zmq_loopback.yaml",
                  json_path=None, plot_path=None, work_dir="out/bench_control", v_sweep=(), fixed_levels=(0,),
                  codec=None, quality_metric=None, quality_target=None, overrides=()):
    """The closed loop over the real two-process link under an SNR trace, per policy
    (codec: the setup's codec.name unless given; its calibration table sets the actions;
    quality_metric, quality_target: the setup's controller keys unless given; overrides:
    KEY=VALUE setup changes for every run)."""
    from .apps.run import parse_overrides
    from .core.config import load_config
    from .core.controller import jakes_snr_trace, read_trace, write_trace
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if trace_path is None:
        trace_path = work / "trace_rayleigh_12db.csv"
        write_trace(trace_path, jakes_snr_trace(n_images, 12.0, 0.01, seed=1))
    trace = read_trace(trace_path)
    n_images = min(n_images, len(trace))
    setup = [f"codec.name={codec}"] if codec else []
    setup += [f"controller.quality_metric={quality_metric}"] if quality_metric else []
    setup += [f"controller.quality_target={quality_target}"] if quality_target is not None else []
    setup += list(overrides)
    base = load_config(config, parse_overrides(setup))["controller"]
    targets = {"delay_ms": base["delay_target_ms"], "quality": base["quality_target"],
               "quality_metric": base["quality_metric"]}
    files = cifar_test_images(Path(data_dir or DEFAULT_DATA), n_images)
    common = ["controller.enabled=true", f"channel.snr_trace={trace_path}", f"controller.V={V}", *setup]
    runs = [("lyapunov", ["controller.policy=lyapunov"]), ("greedy", ["controller.policy=greedy"])]
    runs += [(f"fixed_{lvl}", ["controller.policy=fixed", f"controller.fixed_power_level={lvl}"]) for lvl in fixed_levels]
    runs += [(f"lyapunov_V{v:g}", ["controller.policy=lyapunov", f"controller.V={v}"]) for v in v_sweep]
    result = {"codec": codec or load_config(config)["codec"]["name"], "targets": targets, "V": V, "setup": setup,
              "trace": str(trace_path), "policies": {}, "fixed": {}, "v_sweep": {}}
    slots_by_run = {}
    for name, extra in tqdm(runs, desc="bench control", unit="run"):
        folder = run_link(config, files, work / name, common + extra, timeout_s=3600)
        summary, slots = _policy_summary(folder, targets)
        slots_by_run[name] = slots
        if name.startswith("fixed_"):
            result["fixed"][name] = summary
        elif name.startswith("lyapunov_V"):
            result["v_sweep"][name[len("lyapunov_V"):]] = summary
        else:
            result["policies"][name] = summary
    result["model"] = model_bound(config, trace[:n_images], [f"channel.snr_trace={trace_path}", *setup])
    if "fixed_0" in result["fixed"]:   # full power, when it was run
        result["policies"]["fixed_max"] = result["fixed"]["fixed_0"]
    meeting = {name: s for name, s in result["fixed"].items() if s["constraints_met"]}
    if meeting:
        name = min(meeting, key=lambda n: meeting[n]["energy_per_image"])
        result["cheapest_fixed_meeting_targets"] = {"policy": name, **meeting[name]}
        result["lyapunov_energy_saving_vs_cheapest_fixed"] = \
            1 - result["policies"]["lyapunov"]["energy_per_image"] / meeting[name]["energy_per_image"]
    if json_path:
        write_json(json_path, result)
    if plot_path:
        plot_control(result, slots_by_run["lyapunov"], trace, plot_path)
    return result


def plot_control(result, slots, trace, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    slots = slots[:len(trace)]
    t = np.arange(len(slots))
    fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, trace[:len(slots)], lw=0.6, label="trace (full power)")
    axes[0].plot(t, [s.get("snr_est_db", np.nan) for s in slots], ".", ms=1.5, label="RX estimate")
    axes[0].set_ylabel("SNR (dB)")
    axes[0].legend(fontsize=7)
    axes[1].plot(t, [s["Z"] for s in slots], label="Z (delay)")
    axes[1].plot(t, [s["Y"] for s in slots], label="Y (quality)")
    axes[1].set_ylabel("virtual queues")
    axes[1].legend(fontsize=7)
    axes[2].step(t, [s["power_level"] for s in slots], lw=0.6)
    axes[2].set_ylabel("power level\n(2 dB steps)")
    rates = [s.get("rate_index", 0) for s in slots]
    if len(set(rates)) > 1:
        ax_rate = axes[2].twinx()
        ax_rate.step(t, rates, lw=0.6, color="tab:green")
        ax_rate.set_ylabel("rate index", color="tab:green")
    steps = [s.get("refine_steps", 0) for s in slots]
    if any(steps):
        axes[2].plot(t, steps, ".", ms=1.5, color="tab:orange", label="refiner steps")
        axes[2].legend(fontsize=7, loc="upper right")
    q = np.cumsum([s["quality"] for s in slots]) / (t + 1)
    unit = {"psnr_db": "PSNR (dB)", "ms_ssim_db": "MS-SSIM (dB)", "accuracy_pct": "accuracy (%)"}[
        result["targets"]["quality_metric"]]
    e = np.cumsum([s["energy"] for s in slots]) / (t + 1)
    axes[3].plot(t, q, label=f"running mean {unit}")
    axes[3].axhline(result["targets"]["quality"], color="gray", ls="--", lw=0.8)
    ax2 = axes[3].twinx()
    ax2.plot(t, e * 1e3, color="tab:red", label="running mean energy (mJ-equiv.)")
    axes[3].set_ylabel(unit)
    axes[3].set_xlabel("image slot")
    fig.suptitle(f"Lyapunov controller over the ZMQ link, {result.get('codec', '')}, V={result['V']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if result["v_sweep"]:
        runs = {float(v): summary for v, summary in result["v_sweep"].items()}
        runs.setdefault(float(result["V"]), result["policies"]["lyapunov"])    # the main run, at its V
        vs = sorted(runs)
        targets = result["targets"]
        fig, ax = plt.subplots(1, 3, figsize=(11, 3.2))
        panels = (("energy per image", lambda r: r["energy_per_image"], None),
                  (f"{unit} minus target", lambda r: r["avg_quality"] - targets["quality"], 0.0),
                  ("delay minus target (ms)", lambda r: r["avg_delay_ms"] - targets["delay_ms"], 0.0))
        met = [v for v in vs if runs[v]["constraints_met"]]
        for a, (label, value, zero) in zip(ax, panels):
            a.plot(vs, [value(runs[v]) for v in vs], "o-", label="run")
            a.plot(met, [value(runs[v]) for v in met], "o", color="C2", label="both targets met (2%)")
            if zero is not None:
                a.axhline(zero, color="k", lw=0.6)
            a.set_xscale("log")
            a.set_xlabel("V")
            a.set_ylabel(label)
            a.grid(alpha=0.3)
        ax[0].legend(fontsize=7)
        fig.suptitle(f"Lyapunov controller against V, {result.get('codec', '')}", fontsize=9)
        fig.tight_layout()
        fig.savefig(str(path).replace(".png", "_vsweep.png"), dpi=110)
        plt.close(fig)
