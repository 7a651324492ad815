"""CamVid segmenter network: a small U-Net (three max-pooled stages of conv3x3/BN/ReLU pairs,
bilinear upsampling with skip connections, 1x1 head). gsc_models.train_segmenter trains it."""
import torch
from torch import nn

from .camvid import CLASSES

STRIDE = 8     # three 2x2 poolings: input sides must be multiples of 8


def _pair(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Segmenter(nn.Module):
    """uint8-range RGB in [0, 1], [N,3,H,W] (H, W multiples of 8) -> class logits [N,classes,H,W]."""

    def __init__(self, width: int = 24, classes: int = len(CLASSES)):
        super().__init__()
        self.config = {"width": width, "classes": classes}
        c = [width, 2 * width, 4 * width, 8 * width]
        self.enc = nn.ModuleList([_pair(3, c[0]), _pair(c[0], c[1]), _pair(c[1], c[2]), _pair(c[2], c[3])])
        self.dec = nn.ModuleList([_pair(c[3] + c[2], c[2]), _pair(c[2] + c[1], c[1]), _pair(c[1] + c[0], c[0])])
        self.head = nn.Conv2d(c[0], classes, 1)

    def forward(self, x):
        return self.forward_features(x)[0]

    def forward_features(self, x):
        """(logits, features): features [N, 8 x width] are the bottleneck averaged over the image, what
        the project's segmenter-feature Frechet distance compares."""
        x = (x - 0.45) / 0.25
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        features = x.mean(dim=(2, 3))
        for block, skip in zip(self.dec, reversed(skips[:-1])):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x), features


class WithFeatures(nn.Module):
    """The segmenter with both outputs, for export."""

    def __init__(self, segmenter: Segmenter):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x):
        return self.segmenter.forward_features(x)
