"""Loss terms, one ``nn.Module`` per file."""

from mimkit.losses.contrastive import DenseContrastiveLoss
from mimkit.losses.ibot import IBOTLoss
from mimkit.losses.masked import MaskedPatches, masked_patches

__all__ = ["DenseContrastiveLoss", "IBOTLoss", "MaskedPatches", "masked_patches"]
