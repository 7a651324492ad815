"""`scripts/gsc bench codec --dataset camvid`: bits only, no channel.

Each codec is swept over its rates on the CamVid test frames at the working
resolution (256x192), and every reconstruction is judged by:
- bpp: every payload bit over the frame's pixels (SPIC: map, coarse image,
  header and the CRCs of its streams; classical codecs: the file Pillow writes);
- mIoU (and per-class IoU) of the CamVid segmenter's segmentation of the
  reconstruction against the ground truth, and mIoU by the second, separately
  trained segmenter;
- PSNR and MS-SSIM;
- FSD: the Frechet distance between the segmenter's bottleneck features
  (averaged over the frame) of the originals and of the reconstructions. It is
  this project's own measure, in the manner of FID but on a network trained here;
  it is not FID and not comparable to FID values;
- encode_ms, decode_ms: mean per frame on this machine (SPIC: per step count).
"""
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.metrics import ms_ssim, psnr_db
from ..core.registry import make_codec
from ..core.segmentation import SECOND_SEGMENTER, SEGMENTER, IoU, Segmenter
from ..core.separation import decode_source
from .common import DEFAULT_DATA, models_of, provenance, write_json

WORKING_SIZE = (192, 256)
# Pillow settings swept when no --bpp is given: WebP/AVIF quality, JPEG 2000 compression ratio
CLASSICAL = {"webp": (0, 5, 15, 30, 50, 75), "avif": (0, 5, 15, 30, 50, 75), "jpeg2000": (2000, 400, 250, 150, 100, 60, 30)}
SPIC_CODECS = ("spic", "cspic")
SQGAN_CODECS = ("sqgan", "sqgan-random")


def camvid_test(data_dir=None, count=None):
    """(images uint8 [N,192,256,3], labels uint8 [N,192,256] with void 11, names): CamVid test at the
    working resolution (area-averaged frames, nearest labels)."""
    base = Path(data_dir or DEFAULT_DATA) / "camvid"
    files = sorted((base / "test").glob("*.webp"))[:count]
    if not files:
        raise FileNotFoundError(f"no CamVid test frames in {base / 'test'}: pass --data DIR (the folder holding "
                                "camvid/, ../shared/datasets by default)")
    h, w = WORKING_SIZE
    images, labels = [], []
    for f in files:
        with Image.open(f) as img:
            images.append(np.asarray(img.convert("RGB").resize((w, h), Image.BOX)))
        with Image.open(base / "testannot" / f"{f.stem}.png") as lab:
            labels.append(np.asarray(lab.resize((w, h), Image.NEAREST)))
    return np.stack(images), np.stack(labels).astype(np.uint8), [f.stem for f in files]


def camvid_files(data_dir, count, work_dir):
    """The CamVid test frames at the working resolution, written as PNG under work_dir (what the
    transmitter sends); their label maps in labels/ beside them."""
    images, labels, names = camvid_test(data_dir, count)
    folder = Path(work_dir) / f"camvid_{images.shape[2]}x{images.shape[1]}"
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    files = []
    for image, label, name in zip(images, labels, names):
        files.append(folder / f"{name}.png")
        Image.fromarray(image).save(files[-1])
        Image.fromarray(label).save(folder / "labels" / f"{name}.png")
    return files


class SegmentationJudge:
    """mIoU of both CamVid segmenters on received frames against the ground truth (a lost frame
    counts as the mean image)."""

    def __init__(self, files):
        self.segmenters = {"miou": Segmenter(SEGMENTER), "miou_second": Segmenter(SECOND_SEGMENTER)}
        self.labels = [np.asarray(Image.open(f.parent / "labels" / f.name)) for f in files]

    def __call__(self, received) -> dict:
        out = {}
        for key, seg in self.segmenters.items():
            iou = IoU(len(seg.classes), seg.void)
            for pred, truth in zip(seg.predict(np.stack(received)), self.labels):
                iou.add(pred, truth)
            out[key] = round(iou.mean(), 4)
        return out

    def model_files(self) -> dict:
        return {k: v for seg in self.segmenters.values() for k, v in seg.model_files().items()}


def classical_stream(image: np.ndarray, codec: str, setting) -> bytes:
    buf = io.BytesIO()
    pil = Image.fromarray(image)
    if codec == "webp":
        pil.save(buf, "WEBP", quality=int(setting), method=6)
    elif codec == "avif":
        pil.save(buf, "AVIF", quality=int(setting), speed=6)
    elif codec == "jpeg2000":
        pil.save(buf, "JPEG2000", no_jp2=True, irreversible=True, quality_mode="rates", quality_layers=[setting])
    else:
        raise ValueError(f"--codec {codec!r}: classical codecs are {', '.join(CLASSICAL)}")
    return buf.getvalue()


def classical_at_budget(image: np.ndarray, codec: str, budget: int) -> bytes:
    """The best-quality stream that fits budget bytes (the smallest one when none fits)."""
    from ..core.separation import BudgetError, encode_source
    try:
        return encode_source(image, codec, budget)
    except BudgetError:
        lowest = CLASSICAL[codec][0]
        return classical_stream(image, codec, lowest)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, C]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(ca)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(root_a @ cb @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


class Judge:
    """The two segmenters and the originals' scores every point is compared with."""

    def __init__(self, images, labels):
        self.first, self.second = Segmenter(SEGMENTER), Segmenter(SECOND_SEGMENTER)
        self.images, self.labels = images, labels
        pred, self.features = self.first.predict_features(images)
        self.classes = self.first.classes
        self.original = self._ious(pred, self.second.predict(images))

    def _ious(self, pred, pred_second) -> dict:
        first, second = IoU(len(self.classes), self.first.void), IoU(len(self.classes), self.first.void)
        for p, q, t in zip(pred, pred_second, self.labels):
            first.add(p, t)
            second.add(q, t)
        return {"miou": round(first.mean(), 4), "class_iou": self._named(first.per_class()),
                "miou_second": round(second.mean(), 4), "class_iou_second": self._named(second.per_class())}

    def _named(self, values) -> dict:
        return {c: (None if np.isnan(v) else round(float(v), 4)) for c, v in zip(self.classes, values)}

    def point(self, recon: np.ndarray, bits: np.ndarray, encode_ms, decode_ms, **extra) -> dict:
        pred, features = self.first.predict_features(recon)
        n_px = recon.shape[1] * recon.shape[2]
        return {**extra, "bpp": round(float(np.mean(bits)) / n_px, 5),
                **self._ious(pred, self.second.predict(recon)),
                "psnr_db": round(float(np.mean([psnr_db(a, b) for a, b in zip(self.images, recon)])), 3),
                "ms_ssim": round(float(np.mean([ms_ssim(a, b) for a, b in zip(self.images, recon)])), 5),
                "fsd": round(frechet_distance(self.features, features), 4),
                "encode_ms": round(float(np.mean(encode_ms)), 2), "decode_ms": round(float(np.mean(decode_ms)), 2)}


def classical_points(judge, codec, bpp_targets=None) -> list:
    h, w = WORKING_SIZE
    settings = [("bpp_target", b) for b in bpp_targets] if bpp_targets else [("setting", s) for s in CLASSICAL[codec]]
    points = []
    for index, (kind, value) in enumerate(settings):
        recon, bits, enc, dec = [], [], [], []
        for image in judge.images:
            start = time.perf_counter()
            data = classical_at_budget(image, codec, int(value * h * w / 8)) if kind == "bpp_target" else \
                classical_stream(image, codec, value)
            enc.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            recon.append(decode_source(data, codec, h, w))
            dec.append((time.perf_counter() - start) * 1e3)
            bits.append(8 * len(data))
        point = judge.point(np.stack(recon), np.array(bits), enc, dec, rate_index=index, **{kind: value})
        points.append(point)
        print(f"{codec} {kind} {value}: {point['bpp']:.4f} bpp, mIoU {point['miou']:.3f}, "
              f"PSNR {point['psnr_db']:.2f} dB", flush=True)
    return points


def spic_points(judge, name, levels, steps_list) -> list:
    codec = make_codec(name)
    h, w = WORKING_SIZE
    points = []
    for level in levels:
        payloads, bits, extra, enc = [], [], [], []
        per_class = {}
        for image in judge.images:
            start = time.perf_counter()
            payload = codec.encode_level(image, level)
            enc.append((time.perf_counter() - start) * 1e3)
            payloads.append(payload)
            bits.append(8 * len(payload))
            extra.append(sum(codec.last_bits["classes"].values()))
            for c in codec.classes:
                per_class.setdefault(codec.class_names[c], []).append(codec.last_bits["classes"].get(
                    codec.class_names[c], 0))
        for steps in steps_list:
            recon, dec = [], []
            for i, payload in enumerate(payloads):
                start = time.perf_counter()
                recon.append(codec.decode_payload(payload, h, w, steps=steps or 0, seed=i))
                dec.append((time.perf_counter() - start) * 1e3)
            more = {"rate_index": level, "level": codec.level_label(level)}
            if steps is not None:
                more["steps"] = steps
            if codec.classes:
                more["extra_bpp"] = round(float(np.mean(extra)) / (h * w), 5)
                more["extra_bpp_per_class"] = {c: round(float(np.mean(v)) / (h * w), 5) for c, v in per_class.items()}
            point = judge.point(np.stack(recon), np.array(bits), enc, dec, **more)
            points.append(point)
            print(f"{name} level {level} ({more['level']})" + (f", {steps} steps" if steps is not None else "")
                  + f": {point['bpp']:.4f} bpp, "
                  f"mIoU {point['miou']:.3f}, PSNR {point['psnr_db']:.2f} dB, decode {point['decode_ms']:.0f} ms",
                  flush=True)
    return points, codec


def bench_codec(codecs, n_images=None, data_dir=None, json_path="out/bench_codec.json",
                plot_path="out/bench_codec.png", bpp_targets=None, steps_list=(4,), levels=None, command=None):
    """levels: {codec name: [levels]}, '' for every SPIC codec (default: all levels)."""
    images, labels, _ = camvid_test(data_dir, n_images)
    judge = Judge(images, labels)
    result = {"dataset": "camvid", "resolution": list(WORKING_SIZE), "n_images": len(images),
              "original": judge.original, "codecs": []}
    users = [judge.first, judge.second]
    for name in codecs:
        if name in SPIC_CODECS:
            from ..core.spic import LEVELS
            chosen = (levels or {}).get(name, (levels or {}).get("", range(len(LEVELS))))
            points, codec = spic_points(judge, name, chosen, steps_list)
            users.append(codec)
        elif name in SQGAN_CODECS:
            from ..core.sqgan import LEVELS
            chosen = (levels or {}).get(name, (levels or {}).get("", range(len(LEVELS))))
            points, codec = spic_points(judge, name, chosen, (None,))     # a GAN decoder: no steps
            users.append(codec)
        elif name in CLASSICAL:
            points = classical_points(judge, name, bpp_targets)
        else:
            raise ValueError(f"--codec {name!r}: bench codec takes {', '.join(SPIC_CODECS + SQGAN_CODECS + tuple(CLASSICAL))}")
        result["codecs"].append({"codec": name, "points": points})
    prov = provenance(command, models=models_of(*users))
    result.update({"commit": prov["commit"], "command": prov["command"], "date": prov["date"],
                   "models": prov["models"], "provenance": prov})
    write_json(json_path, result)
    plot_codec(result, plot_path)
    return result


def plot_codec(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for entry in result["codecs"]:
        by_steps = {}
        for p in entry["points"]:
            by_steps.setdefault(p.get("steps"), []).append(p)
        for steps, pts in by_steps.items():
            pts = sorted(pts, key=lambda p: p["bpp"])
            label = entry["codec"] + (f" ({steps} steps)" if steps is not None and len(by_steps) > 1 else "")
            for ax, key in zip(axes, ("miou", "psnr_db", "fsd")):
                ax.plot([p["bpp"] for p in pts], [p[key] for p in pts], "o-", label=label, ms=3)
    for ax, key, name in zip(axes, ("miou", "psnr_db", "fsd"), ("mIoU (camvid_segmenter)", "PSNR (dB)",
                                                                 "segmenter-feature Frechet distance (FSD)")):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].axhline(result["original"]["miou"], color="k", ls="--", lw=0.8, label="originals")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"CamVid test ({result['n_images']} frames, {result['resolution'][1]}x{result['resolution'][0]}), "
                 "bits only")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
