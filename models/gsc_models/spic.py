"""SPIC's receiver: a SPADE-conditioned diffusion super-resolution U-Net.

The transmitter sends a semantic label map (SSM) and a coarse image (the frame
area-downsampled by a factor and coded by Pillow's WebP). The receiver upsamples
the coarse image (Pillow's bicubic) to the working resolution and regenerates the
detail with this model. As in the refiner (gsc_models.refiner), the diffusion runs on the scaled
residual r = RESIDUAL_SCALE * (x - up(coarse)), so sampling starts from the
upsampled coarse image; cosine schedule in continuous time, v-prediction, DDIM.

The encoder half has plain residual blocks (GroupNorm, FiLM on t); the middle and
the decoder normalise with SPADE: GroupNorm without affine parameters, then a scale
and shift computed per pixel from the label map, so the semantics steer every
decoder stage. The coarse image is concatenated to the noisy input.
The degradation the model is trained on is coarse_image() below; the runtime
(gsc_blocks.core.spic) produces the same pixels from the bytes it receives.
"""
import io

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from .refiner import _Embedding, _ResBlock, ddim

N_CLASSES = 11
SIZE_MULTIPLE = 4           # two stride-2 downsamplings


def coarse_image(image: np.ndarray, factor: int, quality: int) -> np.ndarray:
    """uint8 HxWx3 -> what the receiver sees: BOX-downsampled by factor, WebP at quality, decoded,
    bicubic-upsampled back to HxW (uint8)."""
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((w // factor, h // factor), Image.BOX)
    buf = io.BytesIO()
    small.save(buf, "WEBP", quality=quality, method=6)
    decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(decoded.resize((w, h), Image.BICUBIC))


def map_at(labels: np.ndarray, factor: int) -> np.ndarray:
    """The label map as the receiver has it when it is sent at 1/factor per side: every factor-th label
    (rows and columns from factor // 2), repeated back to full size."""
    if factor == 1:
        return labels
    h, w = labels.shape[-2:]
    small = labels[..., factor // 2::factor, factor // 2::factor]
    return np.repeat(np.repeat(small, factor, axis=-2), factor, axis=-1)[..., :h, :w]


class _Spade(nn.Module):
    """GroupNorm without affine, then per-pixel (1 + gamma, beta) from the label features."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels, affine=False)
        self.gamma_beta = nn.Conv2d(hidden, 2 * channels, 3, 1, 1)

    def forward(self, x, seg):
        gamma, beta = self.gamma_beta(seg).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class _SpadeBlock(nn.Module):
    def __init__(self, cin, cout, emb, hidden):
        super().__init__()
        self.norm1 = _Spade(cin, hidden)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = _Spade(cout, hidden)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, e, seg):
        h = self.conv1(self.act(self.norm1(x, seg)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(self.act(self.norm2(h, seg) * (1 + scale) + shift))
        return self.skip(x) + h


class _TimeEmbedding(_Embedding):
    """The refiner's embedding of t, without an SNR input (the digital link delivers the bits or nothing)."""

    def __init__(self, dim, freqs=16):
        super().__init__(dim, freqs)
        self.mlp[0] = nn.Linear(2 * freqs, dim)

    def forward(self, t):
        angles = t * self.freqs[None, :]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))


class SpadeDenoiser(nn.Module):
    """(z_t, coarse, labels one-hot, t) -> v. Fully convolutional; sides multiples of 4."""

    def __init__(self, channels=32, hidden=16):
        super().__init__()
        c, e = channels, 4 * channels
        self.config = {"channels": channels, "hidden": hidden}
        self.embed = _TimeEmbedding(e)
        self.seg = nn.ModuleList(nn.Sequential(nn.Conv2d(N_CLASSES, hidden, 3, 1, 1), nn.ReLU())
                                 for _ in range(3))
        self.stem = nn.Conv2d(6, c, 3, 1, 1)
        self.enc1 = _ResBlock(c, c, e)
        self.down1 = nn.Conv2d(c, 2 * c, 3, 2, 1)
        self.enc2 = _ResBlock(2 * c, 2 * c, e)
        self.down2 = nn.Conv2d(2 * c, 2 * c, 3, 2, 1)
        self.mid1 = _SpadeBlock(2 * c, 2 * c, e, hidden)
        self.mid2 = _SpadeBlock(2 * c, 2 * c, e, hidden)
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 2, 2)
        self.dec2 = _SpadeBlock(4 * c, 2 * c, e, hidden)
        self.up1 = nn.ConvTranspose2d(2 * c, c, 2, 2)
        self.dec1 = _SpadeBlock(2 * c, c, e, hidden)
        self.out_norm = _Spade(c, hidden)
        self.out = nn.Conv2d(c, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z_t, coarse, labels, t):
        """z_t [N,3,H,W] noisy scaled residual, coarse [N,3,H,W] upsampled coarse image in [0,1],
        labels [N,11,H,W] one-hot label map, t [N,1] in [0,1] -> v [N,3,H,W]."""
        e = self.embed(t)
        s1 = self.seg[0](labels)
        l2 = F.avg_pool2d(labels, 2)
        s2 = self.seg[1](l2)
        s4 = self.seg[2](F.avg_pool2d(l2, 2))
        h1 = self.enc1(self.stem(torch.cat([z_t, 2 * coarse - 1], dim=1)), e)
        h2 = self.enc2(self.down1(h1), e)
        m = self.mid2(self.mid1(self.down2(h2), e, s4), e, s4)
        d2 = self.dec2(torch.cat([self.up2(m), h2], dim=1), e, s2)
        d1 = self.dec1(torch.cat([self.up1(d2), h1], dim=1), e, s1)
        return self.out(F.silu(self.out_norm(d1, s1)))


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    """uint8/long [N,H,W] class ids -> float [N,11,H,W]."""
    return F.one_hot(labels.long(), N_CLASSES).permute(0, 3, 1, 2).float()


def ddim_sample(model, coarse, labels, steps: int, generator=None, noise=None):
    """DDIM (eta = 0) from t = 1 to 0 in `steps` steps -> the regenerated image in [0,1];
    labels one-hot. steps = 0 returns the upsampled coarse image."""
    return ddim(lambda z, t: model(z, coarse, labels, t), coarse, steps, generator, noise)
