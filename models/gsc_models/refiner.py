"""Conditional diffusion refiner: a small U-Net that refines a JSCC decoder's output.

The diffusion runs on the residual r = RESIDUAL_SCALE * (x - y) between the
original x and the JSCC reconstruction y (both in [0,1]), conditioned on y, on
the SNR the receiver estimated, and on the diffusion time t in [0,1]. Cosine
noise schedule in continuous time, v-prediction:

    z_t = a(t) r + s(t) eps,   v = a(t) eps - s(t) r,   a^2 + s^2 = 1, a(1) = 0.

Sampling is DDIM (deterministic, eta = 0) over `steps` equal steps from t = 1
to 0. One step returns the network's estimate of E[r | y, snr] (a learned
MMSE post-filter); more steps draw a sharper sample of the posterior, at
`steps` network evaluations per image. steps = 0 is the JSCC output itself.
The runtime (gsc_blocks.core.refiner) runs the same sampler on the ONNX denoiser.
"""
import math

import torch
from torch import nn

RESIDUAL_SCALE = 10.0
COSINE_OFFSET = 0.008


def alpha_sigma(t: torch.Tensor):
    """Cosine schedule (Nichol & Dhariwal) in continuous time: a(t), s(t) with a(1) = 0."""
    f = torch.cos((t + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2)
    f0 = math.cos(COSINE_OFFSET / (1 + COSINE_OFFSET) * math.pi / 2)
    abar = (f / f0).pow(2).clamp(0.0, 1.0)
    return abar.sqrt(), (1 - abar).sqrt()


class _Embedding(nn.Module):
    """Sinusoidal features of t plus the SNR -> one conditioning vector."""

    def __init__(self, dim, freqs=16):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), freqs)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * freqs + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t, snr_db):
        angles = t * self.freqs[None, :]
        return self.mlp(torch.cat([angles.sin(), angles.cos(), snr_db / 20.0], dim=1))


class _ResBlock(nn.Module):
    def __init__(self, cin, cout, emb):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, e):
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(self.act(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class Denoiser(nn.Module):
    """U-Net, two downsamplings: (z_t, y, t, snr) -> v. Fully convolutional (sides multiple of 4)."""

    def __init__(self, channels=48):
        super().__init__()
        c, e = channels, 4 * channels
        self.config = {"channels": channels}
        self.embed = _Embedding(e)
        self.stem = nn.Conv2d(6, c, 3, 1, 1)
        self.enc1 = _ResBlock(c, c, e)
        self.down1 = nn.Conv2d(c, 2 * c, 3, 2, 1)
        self.enc2 = _ResBlock(2 * c, 2 * c, e)
        self.down2 = nn.Conv2d(2 * c, 2 * c, 3, 2, 1)
        self.mid1 = _ResBlock(2 * c, 2 * c, e)
        self.mid2 = _ResBlock(2 * c, 2 * c, e)
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 2, 2)
        self.dec2 = _ResBlock(4 * c, 2 * c, e)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, 2)
        self.dec1 = _ResBlock(2 * c, c, e)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 3, 3, 1, 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, z_t, coarse, t, snr_db):
        """z_t [N,3,H,W] noisy scaled residual, coarse [N,3,H,W] JSCC output in [0,1],
        t [N,1] in [0,1], snr_db [N,1] -> v [N,3,H,W]."""
        e = self.embed(t, snr_db)
        h1 = self.enc1(self.stem(torch.cat([z_t, 2 * coarse - 1], dim=1)), e)
        h2 = self.enc2(self.down1(h1), e)
        m = self.mid2(self.mid1(self.down2(h2), e), e)
        d2 = self.dec2(torch.cat([self.up2(m), h2], dim=1), e)
        d1 = self.dec1(torch.cat([self.up1(d2), h1], dim=1), e)
        return self.out(d1)


@torch.no_grad()
def ddim_refine(model, coarse, snr_db, steps: int, generator=None, noise=None):
    """DDIM (eta = 0) from t = 1 to 0 in `steps` steps; returns the refined image in [0,1].
    noise: the starting z_1 (default: drawn with generator)."""
    return ddim(lambda z, t: model(z, coarse, t, snr_db), coarse, steps, generator, noise)


@torch.no_grad()
def ddim(v_of, coarse, steps: int, generator=None, noise=None):
    """The DDIM sampler on the scaled residual to `coarse`: v_of(z_t, t) is the network's v."""
    if steps <= 0:
        return coarse
    z = noise if noise is not None else torch.randn(coarse.shape, generator=generator, device=coarse.device)
    r0 = z
    for i in range(steps, 0, -1):
        t = torch.full((len(coarse), 1), i / steps, device=coarse.device)
        a, s = alpha_sigma(t)
        v = v_of(z, t)
        a, s = a[:, :, None, None], s[:, :, None, None]
        r0 = a * z - s * v
        eps = s * z + a * v
        a_next, s_next = alpha_sigma(torch.full_like(t, (i - 1) / steps))
        z = a_next[:, :, None, None] * r0 + s_next[:, :, None, None] * eps
    return (coarse + r0 / RESIDUAL_SCALE).clamp(0.0, 1.0)
