"""What the benchmarks share: datasets, the ideal AWGN channel, metrics of lost images,
codec + refiner pairs, and result JSON that records where it came from."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..core.metrics import ms_ssim, psnr_db
from ..core.models import CodecError
from ..core.registry import make_codec

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "datasets"


def git_commit() -> str:
    """HEAD's commit, with '-dirty' when tracked files have uncommitted changes; 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def models_of(*users) -> dict:
    """{model name: {role: SHA-256}} of every codec, refiner or classifier given (None skipped)."""
    models = {}
    for user in users:
        if user is not None:
            models.update(user.model_files())
    return dict(sorted(models.items()))


def load_setup(config, overrides=()) -> dict:
    """The validated radio setup a benchmark ran with, as its JSON records it."""
    from ..core.config import load_config
    cfg = load_config(config, list(overrides))
    cfg.pop("_path")
    taps = cfg["channel"]["multipath_taps"]
    cfg["channel"] = {**cfg["channel"], "multipath_taps": [[complex(t).real, complex(t).imag] for t in taps]}
    path = Path(config).resolve()
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return {"file": str(shown), "overrides": list(overrides), **cfg}


def provenance(command=None, setup=None, models=None) -> dict:
    """Where a result came from: the commit, the exact command, the setup and the model hashes."""
    return {"commit": git_commit(), "command": command or " ".join(["python"] + sys.argv),
            "setup": setup, "models": models or {}, "date": time.strftime("%Y-%m-%d", time.gmtime())}


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
    raise ValueError(f"--dataset {dataset!r}: expected cifar10, kodak or camvid")


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
    """Top-1 accuracy of the classifier on the received images (judge = (classifier, labels)), or what
    a callable judge says of them (CamVid: the segmenters' mIoU)."""
    if judge is None:
        return {}
    if callable(judge):
        return judge(received)
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
            source = codec.last_detail
            sources[source] = sources.get(source, 0) + 1
            rx_snr = snr_db if fade_power is None else snr_db + 10 * np.log10(max(float(fade_power[i]), 1e-12))
            noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) \
                * np.sqrt(10 ** (-rx_snr / 10) / 2)
            received = (symbols + noise).astype(np.complex64)
            if codec.regenerates:        # SPIC: its own diffusion decoder, once per step count
                outputs = {k: codec.decode(received, *image.shape[:2], rx_snr, rate_index, steps=k, seed=i)
                           for k in scores}
            else:
                decoded = codec.decode(received, *image.shape[:2], rx_snr, rate_index)
        except (ValueError, CodecError):
            lost += 1
            p, m = _lost_scores(image, mean_image)
            for score in scores.values():
                score["psnr"].append(p)
                score["ssim"].append(m)
                score["received"].append(mean_image)
            continue
        for steps, score in scores.items():
            out = outputs[steps] if codec.regenerates else decoded
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


REFINER_SUFFIX = "+refiner"


def _codec_and_refiner(name, options=None):
    """'swinjscc' -> (codec, None); 'swinjscc+refiner' -> (codec, the refiner trained on swinjscc).
    options: a digital codec's (cbr)."""
    from ..core.refiner import refiner_for
    base = name[:-len(REFINER_SUFFIX)] if name.endswith(REFINER_SUFFIX) else name
    codec = make_codec(base, options=options)
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
