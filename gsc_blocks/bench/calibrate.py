"""`scripts/gsc bench calibrate`: the controller's calibration table of a codec."""
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.codec import cbr_fraction
from ..core.images import load_image
from ..core.models import CodecError
from ..core.registry import make_codec
from .common import (DEFAULT_DATA, _accuracy, _check_refine_steps, _lost_scores, cifar_test_images,
                     ideal_awgn_points, mean_image_of, models_of, provenance, write_json)


def bench_calibrate(codec_name="deepjscc", snrs=None, n_images=300, data_dir=None, out_path=None,
                    refine_steps=None, command=None, dataset="cifar10", cbr=None, work_dir="out/bench_calibrate"):
    """Calibration table for the controller, per rate (every rate index of a successive-refinement
    codec, the one rate of the others, every MCS of a digital codec) and per refiner step count:
    ideal-AWGN PSNR, MS-SSIM and the semantic score per SNR (CIFAR-10: classifier accuracy;
    CamVid: both segmenters' mIoU), and the median decode time (decoder plus refiner). "lost" holds
    the same metrics of the dataset mean image, what a lost image is charged. A digital codec
    with levels (sqgan, spic) sends each image at the highest level its MCS carries, so each rate
    also records the levels its images went at: for sqgan, the kept fraction the rate buys.

    refine_steps: the refiner step counts to measure (default 0, 1, 2 when a refiner is trained
    for the codec, else 0 alone). cbr: a digital codec's channel uses per pixel."""
    from ..core.refiner import refiner_for
    snrs = list(snrs or np.arange(-10.0, 32.5, 2.5))
    codec = make_codec(codec_name, options={"cbr": float(cbr_fraction(cbr))} if cbr else None)
    if dataset == "camvid":
        from .camvid import SegmentationJudge, camvid_files
        files = camvid_files(data_dir and Path(data_dir), n_images, work_dir)
        images = [load_image(f) for f in files]
        judge = scorer = SegmentationJudge(files)
        described = f"CamVid test, first {len(files)} frames at 256x192"
    elif dataset == "cifar10":
        from ..core.semantic import Classifier, cifar_label
        files = cifar_test_images(Path(data_dir or DEFAULT_DATA), n_images)
        images = [load_image(f) for f in files]
        scorer = Classifier()
        judge = (scorer, np.array([scorer.label_index(cifar_label(f)) for f in files]))
        described = f"CIFAR-10 test, first {len(files)} images"
    else:
        raise ValueError(f"calibrate --dataset {dataset!r}: expected cifar10 or camvid")
    mean_image = mean_image_of(images)
    refiner = refiner_for(codec_name)
    steps_list = sorted({int(k) for k in (refine_steps if refine_steps is not None else
                                          ((0, 1, 2) if refiner is not None else (0,)))})
    if any(steps_list) and refiner is None and not codec.regenerates:
        raise CodecError(f"--refine-steps {','.join(map(str, steps_list))}: no refiner card lists {codec_name} "
                         "(models/refiner/card.json 'codecs'); calibrate with --refine-steps 0")
    if codec.regenerates:
        refiner = None                    # SPIC regenerates itself, steps passed to its decoder
    else:
        _check_refine_steps(refiner, steps_list)
    semantic = list(_accuracy(judge, images[:1]))          # the judge's keys: accuracy, or miou and miou_second
    lost = [_lost_scores(image, mean_image) for image in images]
    rate_indexes = range(codec.rate_count)
    rates = {}
    bar = tqdm(total=len(snrs) * len(rate_indexes), desc="calibrate", unit="SNR point")
    for rate in rate_indexes:
        rates[str(rate)] = {"steps": {}}
        try:
            symbols = codec.encode(images[0], 10.0, rate)
        except ValueError:                # a budget the first image does not fit: time another
            symbols = None
        curves = {steps: {"psnr_db": [], "ms_ssim": [], **{k: [] for k in semantic}} for steps in steps_list}
        for s in snrs:
            points = ideal_awgn_points(codec, images, float(s), mean_image, rate_index=rate, judge=judge,
                                       refiner=refiner, steps_list=steps_list)
            for steps, point in points.items():
                for key, curve in curves[steps].items():
                    curve.append(round(point[key], 4 if key == "psnr_db" else 5))
            bar.update()
        point = points[steps_list[0]]
        rates[str(rate)]["symbols"] = int(codec.symbol_count(*images[0].shape[:2], rate))
        if getattr(codec, "rate_labels", None):
            rates[str(rate)]["label"] = codec.rate_labels[rate]
        if "source_codec" in point:       # what the images went as: levels (sqgan: kept fractions), codecs
            rates[str(rate)]["sent_as"] = point["source_codec"]
        for steps in steps_list:
            rates[str(rate)]["steps"][str(steps)] = {**curves[steps],
                                                     "decode_ms": _decode_ms(codec, refiner, images, rate, steps)}
    bar.close()
    table = {"provenance": provenance(command, None, models_of(codec, refiner, scorer)),
             "codec": codec_name, "dataset": described, "channel": "ideal AWGN",
             "refiner": refiner.name if refiner is not None and any(steps_list) else None,
             "judge": ", ".join(scorer.model_files()),
             "lost": {"psnr_db": round(float(np.mean([p for p, _ in lost])), 4),
                      "ms_ssim": round(float(np.mean([m for _, m in lost])), 5),
                      **{k: round(v, 5) for k, v in _accuracy(judge, [mean_image] * len(images)).items()},
                      "definition": "the metrics of the dataset mean image, what a lost image is charged"},
             "snr_db": [float(s) for s in snrs], "rates": rates}
    if cbr:
        table["cbr"] = str(cbr)
    if out_path:
        write_json(out_path, table)
    return table


def _decode_ms(codec, refiner, images, rate, steps, count=50) -> float | None:
    """Median decode time (decoder plus refiner, or a regenerating codec's own steps) of up to
    `count` images sent at rate over a clean channel; None when no image fits the rate."""
    timings = []
    for i, image in enumerate(images[:count]):
        try:
            symbols = codec.encode(image, 30.0, rate)
        except ValueError:
            continue
        start = time.perf_counter()
        if codec.regenerates:
            codec.decode(symbols, *image.shape[:2], 30.0, rate, steps=steps, seed=i)
        else:
            decoded = codec.decode(symbols, *image.shape[:2], 30.0, rate)
            if steps:
                refiner.refine(decoded, 30.0, steps, seed=i)
        timings.append((time.perf_counter() - start) * 1e3)
    return round(float(np.median(timings)), 3) if timings else None
