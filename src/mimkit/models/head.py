"""Projection head of iBOT/DINO: MLP -> L2-normalised bottleneck -> weight-normalised prototypes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def _mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, layers: int) -> nn.Sequential:
    if layers < 1:
        raise ValueError("a projection head needs at least one layer")
    if layers == 1:
        return nn.Sequential(nn.Linear(in_dim, bottleneck_dim))
    mods: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
    for _ in range(layers - 2):
        mods += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
    mods.append(nn.Linear(hidden_dim, bottleneck_dim))
    return nn.Sequential(*mods)


def _prototypes(bottleneck_dim: int, out_dim: int, norm_last_layer: bool) -> nn.Linear:
    layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
    # weight_norm's magnitude starts at 1 and, as in DINO, is frozen when norm_last_layer is set.
    layer.parametrizations.weight.original0.data.fill_(1.0)
    if norm_last_layer:
        layer.parametrizations.weight.original0.requires_grad = False
    return layer


class IBOTHead(nn.Module):
    """Maps a backbone's pooled token and patch tokens to prototype logits.

    Both go through the same MLP to an L2-normalised bottleneck (``embed``, which the dense
    contrastive loss reads). The pooled token then meets the ``out_dim`` prototypes
    (``last_layer``); the patch tokens meet the same prototypes with ``shared_head`` (iBOT's
    default), else a separate last layer of ``patch_out_dim`` prototypes (``patch_layer``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        patch_out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        layers: int = 3,
        shared_head: bool = True,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, layers)
        self.last_layer = _prototypes(bottleneck_dim, out_dim, norm_last_layer)
        self.last_layer2 = (
            None if shared_head else _prototypes(bottleneck_dim, patch_out_dim, norm_last_layer)
        )
        self.apply(_init)

    def embed(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.mlp(tokens), dim=-1)

    @property
    def patch_layer(self) -> nn.Module:
        """The patch prototypes: the CLS ones when shared."""
        return self.last_layer if self.last_layer2 is None else self.last_layer2


    def last_layer_parameters(self) -> list[nn.Parameter]:
        layers = [self.last_layer] + ([self.last_layer2] if self.last_layer2 is not None else [])
        return [p for layer in layers for p in layer.parameters()]


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear) and not hasattr(m, "parametrizations"):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
