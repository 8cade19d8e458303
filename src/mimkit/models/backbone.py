"""The backbone contract: what the head, the losses, the masks and evaluation may rely on.

A backbone turns images ``[B, C, H, W]`` (and optionally a bool mask on its *mask grid*)
into :class:`Features`: one pooled token per image and the patch tokens on the mask grid,
plus whatever attention :class:`~mimkit.models.readout.ReadoutRequest` asked for and the
backbone can report (:attr:`Backbone.readouts`). Nothing outside a backbone knows where its
pooled token comes from (a CLS token, an average) or how its tokens are laid out.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mimkit.errors import ConfigError
from mimkit.models.readout import Readout, ReadoutRequest

# Parameters before the first block (layer 0 of layer-wise LR decay) in ViT-style naming.
EMBEDDINGS = ("patch_embed", "cls_token", "reg_token", "pos_embed", "masked_embed", "norm_pre")

# Attention read-outs a backbone may support (see models/readout.py).
CLS_ROWS = "cls"  # per block: the pooled (CLS) token's attention to every patch
ROLLOUT = "rollout"  # attention rollout over a range of blocks, read on the CLS row


@dataclass
class Features:
    pooled: Tensor  # [B, D]: the image's token (a ViT's CLS token, a Swin's mean token)
    patches: Tensor  # [B, N, D]: one token per cell of the mask grid, row-major
    readout: Readout


def resolve_layer(layer: int, depth: int, where: str | None = None) -> int:
    """A block index in ``0..depth-1``; negative ones count from the end (-1: the last)."""
    idx = layer + depth if layer < 0 else layer
    if not 0 <= idx < depth:
        place = f" in {where!r}" if where else ""
        raise ConfigError(f"layer {layer} is out of range for a backbone of depth {depth}{place}")
    return idx


class Backbone(nn.Module):
    """Base class of every backbone: ViT (``vit.py``), Swin (``swin.py``), timm ViTs
    (``timm_vit.py``). Subclasses set the attributes below and implement the methods."""

    embed_dim: int  # width of ``pooled`` and ``patches``
    depth: int  # attention blocks; layer indices of read-outs count these
    img_size: int  # the image size the backbone was built for
    in_chans: int  # image channels it takes
    readouts: frozenset[str] = frozenset()  # of CLS_ROWS, ROLLOUT
    external_prefix: str = ""  # before the upstream (timm) names of its parameters

    def grid_size(self, img_size: int | None = None) -> int:
        """Side of the mask grid for square ``img_size`` images (default: ``self.img_size``)."""
        raise NotImplementedError

    @property
    def num_patches(self) -> int:
        return self.grid_size() ** 2

    def forward_features(
        self, x: Tensor, mask: Tensor | None = None, request: ReadoutRequest | None = None
    ) -> Features:
        """``mask``: ``[B, N]`` or ``[B, G, G]`` bool on the mask grid (True: replaced by the
        mask token). ``request``: the attention to report; it must fit :attr:`readouts`."""
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Features:
        return self.forward_features(x, mask)

    def last_blocks(self, x: Tensor, n: int) -> list[Features]:
        """Pooled and patch tokens after each of the last ``n`` blocks, final norm applied
        (fewer when the backbone has fewer blocks to offer), for linear probes."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Names of parameters (in this module) that take no weight decay besides biases and
        norms, e.g. tokens and position embeddings."""
        return set()

    def layer_id(self, name: str) -> int:
        """The layer of parameter ``name`` (in this module) for layer-wise LR decay, BEiT's
        numbering: 0 for the embeddings, ``i + 1`` for the ``i``-th block to run, ``depth + 1``
        for what comes after the blocks (the final norm). This is the ViT naming
        (``blocks.I.``), after :attr:`external_prefix`; other layouts override it."""
        parts = name.removeprefix(self.external_prefix).split(".")
        if parts[0] == "blocks":
            return int(parts[1]) + 1
        return 0 if parts[0] in EMBEDDINGS else self.depth + 1

    def check_request(self, request: ReadoutRequest) -> None:
        wanted = {CLS_ROWS} if request.cls_layers else set()
        wanted |= {ROLLOUT} if request.rollout_ranges else set()
        missing = wanted - self.readouts
        if missing:
            raise ValueError(
                f"{type(self).__name__} cannot report {', '.join(sorted(missing))} attention"
            )
