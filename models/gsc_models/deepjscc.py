"""DeepJSCC (Bourtsoulatze et al. 2019) with ADJSCC-style SNR attention.

Fully convolutional: a HxWx3 image maps to (H/4)x(W/4)x(2*latent_complex)
real values, i.e. latent_complex complex symbols per 4x4 pixel block. With
latent_complex=8 the channel bandwidth ratio is 8 / (16*3) = 1/6 for any size.
"""
import torch
from torch import nn

from .layers import GDN, SNRAttention, normalize_power

DOWNSAMPLE = 4


class _Stage(nn.Module):
    """conv -> GDN -> PReLU -> SNR attention; transposed conv on the decoder side."""

    def __init__(self, cin, cout, stride, decoder=False, kernel=5):
        super().__init__()
        pad = kernel // 2
        if decoder and stride > 1:
            self.conv = nn.ConvTranspose2d(cin, cout, kernel, stride, pad, output_padding=stride - 1)
        else:
            self.conv = nn.Conv2d(cin, cout, kernel, stride, pad)
        self.gdn = GDN(cout, inverse=decoder)
        self.act = nn.PReLU(cout)
        self.attention = SNRAttention(cout)

    def forward(self, x, snr_db):
        return self.attention(self.act(self.gdn(self.conv(x))), snr_db)


class Encoder(nn.Module):
    def __init__(self, channels=128, latent_complex=8):
        super().__init__()
        self.stages = nn.ModuleList([
            _Stage(3, channels, 2), _Stage(channels, channels, 2),
            _Stage(channels, channels, 1), _Stage(channels, channels, 1),
        ])
        self.head = nn.Conv2d(channels, 2 * latent_complex, 5, 1, 2)

    def forward(self, image, snr_db):
        """image [N,3,H,W] in [0,1], snr_db [N,1] -> unit-power symbols [N,2C,H/4,W/4]."""
        x = image - 0.5
        for stage in self.stages:
            x = stage(x, snr_db)
        return normalize_power(self.head(x))


class Decoder(nn.Module):
    def __init__(self, channels=128, latent_complex=8):
        super().__init__()
        self.stem = nn.Conv2d(2 * latent_complex, channels, 5, 1, 2)
        self.stages = nn.ModuleList([
            _Stage(channels, channels, 1, decoder=True), _Stage(channels, channels, 1, decoder=True),
            _Stage(channels, channels, 2, decoder=True), _Stage(channels, channels, 2, decoder=True),
        ])
        self.head = nn.Conv2d(channels, 3, 3, 1, 1)

    def forward(self, symbols, snr_db):
        """received symbols [N,2C,h,w], snr_db [N,1] -> image [N,3,4h,4w] in [0,1]."""
        x = self.stem(symbols)
        for stage in self.stages:
            x = stage(x, snr_db)
        return torch.sigmoid(self.head(x))


class DeepJSCC(nn.Module):
    def __init__(self, channels=128, latent_complex=8):
        super().__init__()
        self.config = {"channels": channels, "latent_complex": latent_complex}
        self.encoder = Encoder(channels, latent_complex)
        self.decoder = Decoder(channels, latent_complex)

    @property
    def cbr(self) -> float:
        return self.config["latent_complex"] / (DOWNSAMPLE * DOWNSAMPLE * 3)
