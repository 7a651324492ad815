"""The model registry: each trained model's name mapped to its nn.Module class and its facts.

Training, export and card writing ask MODELS[name] (or names(kind)); none of them tests a name
prefix, a class or a folder to learn what a model is. A name here is also the model's folder under
models/ and the "name" in its card.
"""
from dataclasses import dataclass

from torch import nn

from . import deepjscc, swinjscc
from .cifar_classifier import CifarClassifier
from .refiner import Denoiser
from .segmenter import STRIDE as SEGMENTER_STRIDE, Segmenter
from .spic import SIZE_MULTIPLE as SPIC_SIZE_MULTIPLE, SpadeDenoiser
from .sqgan import DOWNSAMPLE as SQGAN_DOWNSAMPLE, SQGAN


@dataclass(frozen=True)
class ModelSpec:
    build: type[nn.Module]      # called with the card's "config" as keyword arguments
    kind: str                   # "codec" (JSCC encoder + decoder), "refiner", "classifier", "segmenter" or
                                # "superres" (SPIC's receiver) or "sqgan"
    architecture: str           # the card's text; "{config}" stands for the model's config
    codec_id: int | None = None          # the codec id the frame header carries (codecs only)
    successive: bool = False             # trained with random symbol-group truncation: one model, every CBR
    downsample: int | None = None        # image side / latent side (codecs only)
    size_multiple: int | None = None     # image sides must be multiples of this (None: fixed 32x32 input)


_SEGMENTER = ("U-Net segmenter {config}: four stages of two conv3x3/BN/ReLU (max-pooled between), bilinear "
              "upsampling with skip connections, 1x1 head; 11 CamVid classes")
_DEEPJSCC = "DeepJSCC {config}: conv/GDN/PReLU stages with SNR attention (ADJSCC), fully convolutional, /4 spatial"

MODELS = {
    "deepjscc": ModelSpec(deepjscc.DeepJSCC, "codec", _DEEPJSCC, codec_id=1, downsample=deepjscc.DOWNSAMPLE,
                          size_multiple=deepjscc.DOWNSAMPLE),
    "deepjscc_sr": ModelSpec(deepjscc.DeepJSCC, "codec", _DEEPJSCC, codec_id=2, successive=True,
                             downsample=deepjscc.DOWNSAMPLE, size_multiple=deepjscc.DOWNSAMPLE),
    "swinjscc": ModelSpec(swinjscc.SwinJSCC, "codec",
                          "SwinJSCC {config}: 2x2 patch embedding, two Swin stages (window attention, shifted "
                          "windows, patch merging) with SNR channel modulation, linear head; mirrored decoder "
                          "with patch splitting; /4 spatial",
                          codec_id=3, successive=True, downsample=swinjscc.DOWNSAMPLE,
                          size_multiple=swinjscc.SIZE_MULTIPLE),
    "refiner": ModelSpec(Denoiser, "refiner",
                         "conditional diffusion U-Net {config} (two downsamplings, FiLM on time and SNR), "
                         "v-prediction on the scaled residual, cosine schedule, DDIM sampling",
                         size_multiple=4),     # two stride-2 downsamplings
    "cifar_classifier": ModelSpec(CifarClassifier, "classifier",
                                  "CifarClassifier {config}: 6 conv3x3/BN/ReLU layers in 3 max-pooled stages, "
                                  "global average pool, dropout, linear"),
    "spic_sr": ModelSpec(SpadeDenoiser, "superres",
                         "SPADE diffusion super-resolution U-Net {config} (two downsamplings; plain residual "
                         "blocks in the encoder, SPADE GroupNorm from the label map in the middle and decoder, "
                         "FiLM on time), v-prediction on the scaled residual to the upsampled coarse image, "
                         "cosine schedule, DDIM sampling", size_multiple=SPIC_SIZE_MULTIPLE),
    "sqgan": ModelSpec(SQGAN, "sqgan",
                       "SQ-GAN {config}: conv encoder (/16) with SAMM relevance scores (SPADE from the label map, "
                       "sigmoid), EMA vector quantizer; label-map VQ branch (/16) with its own codebook and "
                       "decoder; ADM (mask token, SPADE residual blocks, mask-weighted self-attention); SPADE "
                       "residual decoder (nearest upsampling); trained with a PatchGAN",
                       downsample=SQGAN_DOWNSAMPLE, size_multiple=SQGAN_DOWNSAMPLE),
    "camvid_segmenter": ModelSpec(Segmenter, "segmenter", _SEGMENTER, size_multiple=SEGMENTER_STRIDE),
    "camvid_segmenter_b": ModelSpec(Segmenter, "segmenter", _SEGMENTER, size_multiple=SEGMENTER_STRIDE),
}


def names(kind: str) -> list[str]:
    """The registered model names of one kind, sorted."""
    return sorted(name for name, spec in MODELS.items() if spec.kind == kind)
