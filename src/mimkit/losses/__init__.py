"""Loss terms, one ``nn.Module`` per file."""

from mimkit.losses.ibot import IBOTLoss

__all__ = ["IBOTLoss"]
