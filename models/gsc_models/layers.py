"""Building blocks shared by the JSCC codecs."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class GDN(nn.Module):
    """Generalized divisive normalization (Balle et al.); inverse=True gives IGDN.

    y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2). Parameters are kept positive
    by squaring a reparametrized value, which exports to plain ONNX ops.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_min = beta_min
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels)).view(channels, channels, 1, 1))

    def forward(self, x):
        beta = self.beta_sqrt ** 2 + self.beta_min
        gamma = self.gamma_sqrt ** 2
        norm = torch.sqrt(nn.functional.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


class SNRAttention(nn.Module):
    """Attention feature module (ADJSCC): channel gains from pooled features and SNR.

    Fully convolutional: the pooling makes it independent of image size.
    """

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(16, channels // 4)
        self.mlp = nn.Sequential(
            nn.Linear(channels + 1, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, channels), nn.Sigmoid(),
        )

    def forward(self, x, snr_db):
        pooled = x.mean(dim=(2, 3))
        gains = self.mlp(torch.cat([pooled, snr_db / 20.0], dim=1))
        return x * gains[:, :, None, None]


def normalize_power(latent: torch.Tensor) -> torch.Tensor:
    """Scale each image's symbols to unit average complex power.

    latent is [N, 2*C, h, w]: channels [0, C) are in-phase, [C, 2C) quadrature,
    so the complex power per symbol is 2 * mean(latent**2).
    """
    power = 2.0 * latent.pow(2).mean(dim=(1, 2, 3), keepdim=True)
    return latent / torch.sqrt(power + 1e-12)


def awgn(latent: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Complex AWGN at snr_db ([N,1]) on unit-power symbols in real layout."""
    noise_var = torch.pow(10.0, -snr_db / 10.0)[:, :, None, None]
    return latent + torch.randn_like(latent) * torch.sqrt(noise_var / 2.0)


def keep_groups(latent: torch.Tensor, groups: torch.Tensor):
    """Successive refinement: keep each image's first `groups` complex channels (symbol groups).

    latent is unit-power [N, 2*C, h, w]; groups is [N] (1..C). The kept symbols are
    rescaled to unit average power (the transmitter spends its power on what it
    sends) and the rest are zero, as the receiver fills groups it did not get.
    Returns (latent, mask); the runtime does the same in gsc_blocks.core.codec.
    """
    n, c2, h, w = latent.shape
    keep = (torch.arange(c2 // 2, device=latent.device)[None, :] < groups[:, None]).to(latent.dtype)
    mask = torch.cat([keep, keep], dim=1)[:, :, None, None]
    kept = latent * mask
    # complex power per kept symbol: sum of squares over the 2*groups*h*w kept reals, times 2
    power = kept.pow(2).sum(dim=(1, 2, 3), keepdim=True) / (groups.to(latent.dtype) * h * w)[:, None, None, None]
    return kept / torch.sqrt(power + 1e-12), mask


_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Differentiable MS-SSIM per image of [N,3,H,W] tensors in [0,1]: the same definition as the
    runtime's numpy metric (gsc_blocks.core.metrics.ms_ssim: 11-tap Gaussian window, valid filtering,
    as many of the 5 scales as the size allows, weights renormalized)."""
    g = torch.exp(-(torch.arange(11, dtype=x.dtype, device=x.device) - 5.0) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    c = x.shape[1]
    rows, cols = g.view(1, 1, 11, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, 11).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    scales = max(1, min(5, 1 + int(math.floor(math.log2(min(x.shape[2:]) / 11)))))
    weights = torch.tensor(_MS_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for level in range(scales):
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level == scales - 1:
            values.append(((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1) * cs).flatten(1).mean(1))
        else:
            values.append(cs.flatten(1).mean(1))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    values = torch.stack(values, 1).clamp_min(1e-6)
    return torch.prod(values ** weights, dim=1)
