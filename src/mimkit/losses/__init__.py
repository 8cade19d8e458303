"""Loss terms, one ``nn.Module`` per file."""

from mimkit.losses.contrastive import DenseContrastiveLoss
from mimkit.losses.ibot import IBOTLoss
from mimkit.losses.koleo import KoLeoLoss
from mimkit.losses.loss_prediction import relative_loss_prediction
from mimkit.losses.masked import ImageSlots, MaskedPatches, image_slots, masked_patches

__all__ = [
    "DenseContrastiveLoss",
    "IBOTLoss",
    "ImageSlots",
    "KoLeoLoss",
    "MaskedPatches",
    "image_slots",
    "masked_patches",
    "relative_loss_prediction",
]
