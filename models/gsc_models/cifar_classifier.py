"""The CIFAR-10 classifier network behind the semantic metric (trained by gsc_models.classifier)."""
import torch
from torch import nn


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CifarClassifier(nn.Module):
    """[N,3,32,32] floats in [0,1] -> [N,10] logits."""

    MEAN = (0.491, 0.482, 0.447)
    STD = (0.247, 0.243, 0.262)

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = {"width": width}
        w = width
        self.features = nn.Sequential(*block(3, w), *block(w, w), nn.MaxPool2d(2),
                                      *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                                      *block(2 * w, 4 * w), *block(4 * w, 4 * w), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, 10))
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.head(self.features((x - self.mean) / self.std))
