"""Swin-Transformer JSCC (after SwinJSCC, Yang et al. 2023), SNR- and rate-adaptive.

Encoder: 2x2 patch embedding -> Swin stage (window attention, shifted every
other block) -> patch merging -> Swin stage -> linear head to 2*latent_complex
real channels per token, i.e. latent_complex complex symbols per 4x4 pixel
block (CBR 1/6 with 8). The decoder mirrors it with patch splitting.

SNR adaptation: after each stage a channel modulation (pooled tokens + SNR ->
sigmoid gains, the ADJSCC attention in token form), on both sides.
Rate adaptation: the complex latent channels are symbol groups ordered by
importance (successive refinement). Training keeps a random number of leading
groups per image (gsc_models.layers.keep_groups) and zero-fills the rest, so
one model serves CBR 1/48 .. 1/6 and each further group refines the image. The
ONNX interface is the same as deepjscc's: encoder(image, snr_db) ->
symbols [N,2C,H/4,W/4]; decoder(symbols, snr_db) -> image.

Shifted windows roll cyclically without the boundary mask (attention wraps
around the image edge), which keeps every shape op dynamic for ONNX. Image
sides must be multiples of 16 (4x downsampling times the 4-token window).
"""
import torch
from torch import nn

from .layers import normalize_power

DOWNSAMPLE = 4
SIZE_MULTIPLE = 16


def window_partition(x, ws):
    """[B,H,W,C] -> [B*nW, ws*ws, C]"""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows, ws, b, h, w):
    c = windows.shape[-1]
    x = windows.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, ws):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("bias_index", (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).flatten(), persistent=False)
        self.n = ws * ws

    def forward(self, x):
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.bias_table[self.bias_index].reshape(self.n, self.n, self.heads).permute(2, 0, 1)
        attn = (attn + bias[None]).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, ws, shift, mlp_ratio=4):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        """x [B,H,W,C]"""
        b, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.ws)), self.ws, b, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class ChannelModulation(nn.Module):
    """Per-channel gains from pooled tokens and SNR (ADJSCC attention for [B,H,W,C] tokens)."""

    def __init__(self, dim):
        super().__init__()
        hidden = max(16, dim // 4)
        self.mlp = nn.Sequential(nn.Linear(dim + 1, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, dim), nn.Sigmoid())

    def forward(self, x, snr_db):
        gains = self.mlp(torch.cat([x.mean(dim=(1, 2)), snr_db / 20.0], dim=1))
        return x * gains[:, None, None, :]


class Stage(nn.Module):
    def __init__(self, dim, depth, heads, ws):
        super().__init__()
        self.blocks = nn.ModuleList([SwinBlock(dim, heads, ws, (ws // 2) if i % 2 else 0) for i in range(depth)])
        self.modulation = ChannelModulation(dim)

    def forward(self, x, snr_db):
        for block in self.blocks:
            x = block(x)
        return self.modulation(x, snr_db)


class PatchMerge(nn.Module):
    """[B,H,W,C] -> [B,H/2,W/2,cout]: 2x2 neighbours concatenated, normalized, projected."""

    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.LayerNorm(4 * cin)
        self.proj = nn.Linear(4 * cin, cout)

    def forward(self, x):
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.proj(self.norm(x))


class PatchSplit(nn.Module):
    """[B,H,W,cin] -> [B,2H,2W,cout]: each token projected to a 2x2 block of tokens."""

    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Linear(cin, 4 * cout)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x):
        b, h, w, _ = x.shape
        x = self.proj(x)
        c = x.shape[-1] // 4
        x = x.reshape(b, h, w, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)
        return self.norm(x)


class Encoder(nn.Module):
    def __init__(self, dims, depths, heads, ws, latent_complex):
        super().__init__()
        self.embed = nn.Conv2d(3, dims[0], 2, 2)
        self.embed_norm = nn.LayerNorm(dims[0])
        self.stage1 = Stage(dims[0], depths[0], heads[0], ws)
        self.merge = PatchMerge(dims[0], dims[1])
        self.stage2 = Stage(dims[1], depths[1], heads[1], ws)
        self.head = nn.Linear(dims[1], 2 * latent_complex)

    def forward(self, image, snr_db):
        """image [N,3,H,W] in [0,1], snr_db [N,1] -> unit-power symbols [N,2C,H/4,W/4]."""
        x = self.embed_norm(self.embed(image - 0.5).permute(0, 2, 3, 1))
        x = self.stage2(self.merge(self.stage1(x, snr_db)), snr_db)
        return normalize_power(self.head(x).permute(0, 3, 1, 2))


class Decoder(nn.Module):
    def __init__(self, dims, depths, heads, ws, latent_complex):
        super().__init__()
        self.stem = nn.Linear(2 * latent_complex, dims[1])
        self.stage2 = Stage(dims[1], depths[1], heads[1], ws)
        self.split = PatchSplit(dims[1], dims[0])
        self.stage1 = Stage(dims[0], depths[0], heads[0], ws)
        self.head = nn.ConvTranspose2d(dims[0], 3, 2, 2)

    def forward(self, symbols, snr_db):
        """received symbols [N,2C,h,w], snr_db [N,1] -> image [N,3,4h,4w] in [0,1]."""
        x = self.stem(symbols.permute(0, 2, 3, 1))
        x = self.stage1(self.split(self.stage2(x, snr_db)), snr_db)
        return torch.sigmoid(self.head(x.permute(0, 3, 1, 2)))


class SwinJSCC(nn.Module):
    def __init__(self, dims=(64, 128), depths=(2, 2), heads=(2, 4), window=4, latent_complex=8):
        super().__init__()
        dims, depths, heads = tuple(dims), tuple(depths), tuple(heads)
        self.config = {"dims": list(dims), "depths": list(depths), "heads": list(heads), "window": window,
                       "latent_complex": latent_complex}
        self.encoder = Encoder(dims, depths, heads, window, latent_complex)
        self.decoder = Decoder(dims, depths, heads, window, latent_complex)

    @property
    def cbr(self) -> float:
        return self.config["latent_complex"] / (DOWNSAMPLE * DOWNSAMPLE * 3)
