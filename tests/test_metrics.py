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


def test_batched_metrics_equal_the_metrics_one_image_at_a_time():
    """The image sink measures a stack of same-sized images in one pass: each value must be the
    one the single-image functions give."""
    from gsc_blocks.core.metrics import ms_ssim_batch, psnr_db_batch
    rng = np.random.default_rng(1)
    for shape in [(32, 32, 3), (48, 64, 3), (13, 17, 3)]:
        refs = rng.integers(0, 256, (5, *shape)).astype(np.uint8)
        tests = np.clip(refs + rng.normal(0, 20, refs.shape), 0, 255).astype(np.uint8)
        tests[2] = refs[2]                       # a perfect copy: 100 dB, MS-SSIM 1
        psnr, ssim = psnr_db_batch(refs, tests), ms_ssim_batch(refs, tests)
        assert psnr.shape == ssim.shape == (5,)
        for i in range(5):
            assert abs(psnr[i] - psnr_db(refs[i], tests[i])) < 1e-12
            assert abs(ssim[i] - ms_ssim(refs[i], tests[i])) < 1e-12
        assert psnr[2] == 100.0 and abs(ssim[2] - 1.0) < 1e-12
