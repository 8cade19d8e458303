"""Loss terms, one ``nn.Module`` per file."""

from mimkit.losses.contrastive import DenseContrastiveLoss
from mimkit.losses.ibot import IBOTLoss

__all__ = ["DenseContrastiveLoss", "IBOTLoss"]
