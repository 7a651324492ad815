"""`scripts/gsc bench calibrate`: the controller's calibration table of a codec."""
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.images import load_image
from ..core.models import CodecError
from ..core.registry import make_codec
from .common import (DEFAULT_DATA, _accuracy, _check_refine_steps, _lost_scores, cifar_test_images,
                     ideal_awgn_points, mean_image_of, models_of, provenance, write_json)


def bench_calibrate(codec_name="deepjscc", snrs=None, n_images=300, data_dir=None, out_path=None,
                    refine_steps=None, command=None):
    """Calibration table for the controller, per rate (every rate index of a successive-refinement
    codec, the one rate of the others) and per refiner step count: ideal-AWGN PSNR, MS-SSIM and
    classifier accuracy per SNR, and the median decode time (decoder plus refiner). "lost" holds
    the same metrics of the dataset mean image, what a lost image is charged.

    refine_steps: the refiner step counts to measure (default 0, 1, 2 when a refiner is trained
    for the codec, else 0 alone)."""
    from ..core.refiner import refiner_for
    from ..core.semantic import Classifier, cifar_label
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
    rate_indexes = range(codec.rate_count)
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
    table = {"provenance": provenance(command, None, models_of(codec, refiner, classifier)),
             "codec": codec_name, "dataset": f"CIFAR-10 test, first {len(files)} images", "channel": "ideal AWGN",
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
