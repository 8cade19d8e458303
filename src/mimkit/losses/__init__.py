"""Loss terms, one ``nn.Module`` per file."""

from mimkit.losses.contrastive import DenseContrastiveLoss
from mimkit.losses.ibot import IBOTLoss
from mimkit.losses.koleo import KoLeoLoss
from mimkit.losses.masked import MaskedPatches, masked_patches

__all__ = ["DenseContrastiveLoss", "IBOTLoss", "KoLeoLoss", "MaskedPatches", "masked_patches"]
