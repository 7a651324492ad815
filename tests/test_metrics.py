import numpy as np

from gsc_blocks.core.metrics import ms_ssim, psnr_db


def test_psnr_known_values():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a.copy()
    assert psnr_db(a, b) == 100.0
    b[:] = 110                                   # mse 100
    assert abs(psnr_db(a, b) - 10 * np.log10(255 ** 2 / 100)) < 1e-9


def test_ms_ssim_orders_distortions():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    img = (np.cumsum(img, axis=1) // 64).astype(np.uint8)
    assert abs(ms_ssim(img, img) - 1.0) < 1e-9
    light = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(img + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ms_ssim(img, light) > ms_ssim(img, heavy) > 0.0
