"""`scripts/gsc bench link`: codecs through an ideal AWGN channel and through the
two-process GNU Radio ZMQ loopback at each SNR, in one run."""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..apps.run import run_link
from ..core.codec import DIGITAL
from ..core.images import load_image
from ..core.models import CodecError
from ..core.report import account, summarize
from .camvid import SegmentationJudge, camvid_files
from .common import (DEFAULT_DATA, REFINER_SUFFIX, _accuracy, _check_refine_steps, _codec_and_refiner, _lost_scores,
                     dataset_files, ideal_awgn_point, load_setup, mean_image_of, models_of, provenance, write_json)


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


def oracle_mcs(codec, images, snr_db, mean_image, n_probe=100, fade_power=None, judge=None) -> int:
    """The MCS with the best mean PSNR on the ideal channel (first n_probe images). With a callable
    judge (CamVid): the MCS that loses the fewest frames, then the best mIoU among those. A
    generative codec's frames can score a lower PSNR, and on a few frames a lower mIoU, than the
    mean image a lost frame counts as, so neither score alone is a choice a lab would make."""
    probe = images[:n_probe]
    if not callable(judge):
        scores = [ideal_awgn_point(codec, probe, snr_db, mean_image, index, fade_power=fade_power)["psnr_db"]
                  for index in range(codec.rate_count)]
        return int(np.argmax(scores))
    points = [ideal_awgn_point(codec, probe, snr_db, mean_image, index, fade_power=fade_power, judge=judge)
              for index in range(codec.rate_count)]
    return max(range(len(points)), key=lambda i: (-points[i]["lost"], points[i]["miou"], -i))


def _series(codecs, mcs_policies, cbrs, refine_steps=(1,)):
    """(codec name, MCS policy or CBR or None, refine steps) per curve: a digital codec gets one
    curve per MCS policy, an analog codec with several rates one per CBR (its full rate by
    default), a '<codec>+refiner' one per number of refinement steps."""
    for name, codec in codecs.items():
        steps_list = refine_steps if name.endswith(REFINER_SUFFIX) or codec.regenerates else (0,)
        for steps in steps_list:
            if codec.family == DIGITAL:
                for policy in mcs_policies:
                    yield name, policy, steps
            elif codec.rate_count > 1 and cbrs:
                for cbr in cbrs:
                    yield name, cbr, steps
            else:
                yield name, None, steps


def bench_link(codec_name="deepjscc", snrs=(0, 5, 10, 15, 20), n_images=200, data_dir=None,
               config="radio_config/zmq_loopback.yaml", json_path=None, plot_path=None, work_dir="out/bench_link",
               mcs="oracle", cbr=None, fading="none", dataset="cifar10", refine_steps="1", command=None):
    """codec_name: one codec or several, comma-separated ('deepjscc,separation').
    mcs (separation only): 'oracle' (best MCS per SNR on the ideal channel), an MCS name or
    index, or several comma-separated, each its own curve.
    cbr (successive-refinement codecs only): CBRs like '1/24,1/12,1/6', each its own curve; with
    one CBR, the digital codecs fill the same channel uses.
    fading: 'none' or 'rayleigh' (block fading, one Rayleigh gain per image, the same gains
    on the ideal channel and over the link). dataset: cifar10 (test) or kodak.
    '<codec>+refiner' adds the diffusion refiner after the decoder, refine_steps ('1,4') DDIM
    steps, each its own curve; over the link the steps travel in the header.
    command: the command line recorded in the result's provenance."""
    from ..core.fading import block_fading_gains
    if fading not in ("none", "rayleigh"):
        raise ValueError(f"--fading {fading!r}: expected none or rayleigh")
    data_dir = Path(data_dir or DEFAULT_DATA)
    files = camvid_files(data_dir, n_images, work_dir) if dataset == "camvid" else \
        dataset_files(dataset, data_dir, n_images)
    images = [load_image(f) for f in files]
    mean_image = mean_image_of(images)
    fade_power = None
    if fading == "rayleigh":
        fade_power = np.abs(block_fading_gains(len(files), load_setup(config)["channel"]["seed"])) ** 2
    names = [n.strip() for n in codec_name.split(",") if n.strip()]
    policies = [m.strip() for m in str(mcs).split(",") if m.strip()]
    cbrs = [c.strip() for c in str(cbr or "").split(",") if c.strip()]
    digital_cbr = None
    if len(cbrs) == 1:              # digital codecs fill the channel uses of the analog codecs' one CBR
        from ..core.codec import cbr_fraction
        digital_cbr = float(cbr_fraction(cbrs[0]))
    pairs = {name: _codec_and_refiner(name, {"cbr": digital_cbr} if digital_cbr else None) for name in names}
    codecs = {name: pair[0] for name, pair in pairs.items()}
    steps_list = [int(k) for k in str(refine_steps).split(",") if k.strip()]
    for name, (_, refiner) in pairs.items():
        _check_refine_steps(refiner, steps_list)
    for codec in codecs.values():       # a rate the codec lacks stops here, before any run
        option, labels = ("--mcs", [m for m in policies if m != "oracle"]) if codec.family == DIGITAL else \
            ("--cbr", cbrs if codec.rate_count > 1 else [])
        for label in labels:
            try:
                codec.rate_index_for(label)
            except ValueError as err:
                raise CodecError(f"{option}: {err}") from None
    judge, accuracy_original, classifier = None, None, None
    if dataset == "cifar10":
        from ..core.semantic import Classifier, cifar_label
        classifier = Classifier()
        judge = (classifier, np.array([classifier.label_index(cifar_label(f)) for f in files]))
        accuracy_original = _accuracy(judge, images)["accuracy"]
    elif dataset == "camvid":
        judge = classifier = SegmentationJudge(files)
        accuracy_original = judge(images)
    series = list(_series(codecs, policies, cbrs, steps_list))
    first = codecs[names[0]]
    used = [c for pair in pairs.values() for c in pair] + [classifier]
    result = {"provenance": provenance(command, load_setup(config), models_of(*used)),
              "codec": codec_name,
              "cbr": first.cbr if first.family == DIGITAL else
              first.cbr_at(first.rate_index_for(cbrs[0]) if cbrs and first.rate_count > 1 else 0),
              "dataset": f"CIFAR-10 test (first {len(files)} images)" if dataset == "cifar10"
              else f"CamVid test ({len(files)} frames at 256x192)" if dataset == "camvid"
              else f"Kodak ({len(files)} images, 768x512 and 512x768)",
              "n_images": len(files), "fading": fading, "points": [],
              "classifier": "cifar_classifier (models/cifar_classifier/card.md)" if dataset == "cifar10" else
              "camvid_segmenter and camvid_segmenter_b: mIoU against the ground truth" if judge else None,
              "accuracy_original": accuracy_original,
              "notes": "ofdm_zmq: TX and RX as two processes over ZMQ on 127.0.0.1, gr-channels AWGN at the "
                       "per-carrier SNR; snr_est_db is the receiver's preamble estimate; a lost image counts "
                       "as the dataset mean image in psnr_db/ms_ssim; separation: mcs 'oracle' picks the MCS "
                       "with the best PSNR on the ideal channel over the first 100 images at each SNR; accuracy: "
                       "top-1 of the CIFAR-10 classifier on the received images (a lost image: the mean image), "
                       "accuracy_original: on the originals; fading rayleigh: block fading, one CN(0,1) gain per "
                       "image (seeded by channel.seed), the encoder conditioned on the mean SNR, the decoder on "
                       "the image's SNR (its true value on the ideal channel, the receiver's estimate over the "
                       "link); camvid: miou and miou_second are the two segmenters' mIoU on the received frames, "
                       "accuracy_original theirs on the originals; spic's refine_steps are its regeneration "
                       "steps"}
    summaries = []
    bar = tqdm(total=2 * len(snrs) * len(series), desc="bench link", unit="point")
    for snr in snrs:
        for name, policy, steps in series:
            codec, refiner = pairs[name]
            extra = {"codec": name, "refine_steps": steps}
            overrides, rate = [f"codec.name={codec.name}", f"codec.refine_steps={steps}"], 0
            if fading != "none":
                overrides.append("channel.fading=rayleigh_block")
            if codec.family == DIGITAL:
                overrides.append(f"codec.digital_cbr={codec.cbr!r}")
            if policy is not None:
                if policy == "oracle":
                    rate = oracle_mcs(codec, images, float(snr), mean_image, fade_power=fade_power, judge=judge)
                else:
                    rate = codec.rate_index_for(policy)
                extra.update(codec.rate_record(rate, *images[0].shape[:2]))
                if codec.family == DIGITAL:
                    extra["mcs_policy"] = policy
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
            summaries.append(dict(summary, tag=tag))
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
        "per_codec": {tag: sum(s["decoded"] for s in summaries if s["tag"] == tag)
                      / max(sum(s.get("link_seconds", 0) for s in summaries if s["tag"] == tag), 1e-9)
                      for tag in dict.fromkeys(s["tag"] for s in summaries)},
        "definition": "rates over the link's wall time (first image sent to last image decoded, two processes "
                      "on one host), in all and per codec (images/s over its SNRs); latency_ms: receiver, first "
                      "fragment in to image decoded; e2e_latency_ms: image handed to the encoder to image "
                      "decoded, with every image queued at once",
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
    third = len(groups) > 1 or any("miou" in p for p in result["points"])
    fig, axes = plt.subplots(1, 3 if third else 2, figsize=(15 if third else 10, 4))
    curves = {}
    for p in result["points"]:
        curves.setdefault(_curve_label(p), []).append(p)
    for label, pts in curves.items():
        style = "o--" if pts[0]["channel"] == "awgn_ideal" else "s-"
        snr = [p["snr_db"] for p in pts]
        axes[0].plot(snr, [p["psnr_db"] for p in pts], style, label=label)
        axes[1].plot(snr, [p["ms_ssim"] for p in pts], style, label=label)
        if "miou" in pts[0]:
            axes[2].plot(snr, [p["miou"] for p in pts], style, label=label)
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_ylabel("MS-SSIM")
    for ax in axes[:2]:
        ax.set_xlabel("SNR (dB)")
    if any("miou" in p for p in result["points"]):
        axes[2].set_xlabel("SNR (dB)")
        axes[2].set_ylabel("mIoU (camvid_segmenter)")
        axes[2].axhline(result["accuracy_original"]["miou"], color="k", ls="--", lw=0.8)
    elif len(groups) > 1:
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_link_table(result) -> str:
    lines = ["| SNR (dB) | codec | channel | MCS or CBR | refine steps | PSNR (dB) | MS-SSIM | accuracy | "
             "SNR est (dB) | lost |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in result["points"]:
        est = f"{p['snr_est_db']:.2f}" if p.get("snr_est_db") is not None else "-"
        acc = f"{p['accuracy']:.3f}" if p.get("accuracy") is not None else \
            f"mIoU {p['miou']:.3f}" if p.get("miou") is not None else "-"
        mcs = f"{p['mcs']} ({p['mcs_policy']}, {p['payload_bytes']} B)" if p.get("mcs") else \
            f"CBR {p['cbr']} ({p['groups']} groups)" if p.get("groups") else "-"
        steps = f"{p.get('refine_steps', 0)}" + (f" ({p['refine_ms_p50']:.0f} ms)" if p.get("refine_ms_p50") else "")
        lines.append(f"| {p['snr_db']:.0f} | {p.get('codec', result['codec'])} | {p['channel']} | {mcs} | {steps} | "
                     f"{p['psnr_db']:.2f} | {p['ms_ssim']:.4f} | {acc} | {est} | "
                     f"{p['lost']} |")
    return "\n".join(lines)
