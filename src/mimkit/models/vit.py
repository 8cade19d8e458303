"""Vision Transformer backbone that can report its own attention cheaply.

Parameter names follow the timm / DINO / iBOT layout (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.attn.qkv`` ...), plus iBOT's ``masked_embed``, so weights
move between mimkit and those checkpoints without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from mimkit.models.backbone import CLS_ROWS, ROLLOUT, Backbone, Features
from mimkit.models.mask_token import put_mask_token
from mimkit.models.readout import (
    Readout,
    ReadoutRecorder,
    ReadoutRequest,
    attention_with_readout,
)

# How a grid other than the trained one gets its position embeddings: an exact bicubic
# resize to the new grid (mimkit) or DINO / iBOT's scale factor (g + 0.1) / g0.
POS_INTERPOLATIONS = ("size", "dino")


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the patch size {self.patch_size}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, want_cls: bool = False, want_full: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Return (output, CLS row [B,H,T] or None, head-mean attention [B,T,T] or None)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, H, T, hd]
        out, cls_row, full = attention_with_readout(q, k, v, self.scale, want_cls, want_full)
        out = out.transpose(1, 2).reshape(b, t, d)
        return self.proj(out), cls_row, full


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, want_cls: bool = False, want_full: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        y, cls_row, full = self.attn(self.norm1(x), want_cls, want_full)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, cls_row, full


class VisionTransformer(Backbone):
    """A ViT with a CLS token: ``pooled`` is the final-norm CLS token, ``patches`` the other
    tokens; it reports CLS rows and rollout on the blocks a request names, and only there."""

    readouts = frozenset({CLS_ROWS, ROLLOUT})

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        pos_interpolation: str = "size",
    ) -> None:
        super().__init__()
        if pos_interpolation not in POS_INTERPOLATIONS:
            raise ValueError(
                f"pos_interpolation must be one of {', '.join(POS_INTERPOLATIONS)}, "
                f"got {pos_interpolation!r}"
            )
        self.pos_interpolation = pos_interpolation
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not divisible by patch size {patch_size}")
        self.img_size = img_size
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.masked_embed = nn.Parameter(torch.zeros(1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r) for r in rates
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    # -- geometry -----------------------------------------------------------------------
    def grid_size(self, img_size: int | None = None) -> int:
        return (img_size or self.img_size) // self.patch_size

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed", "masked_embed"}

    # -- forward ------------------------------------------------------------------------
    def interpolate_pos_embed(self, gh: int, gw: int) -> Tensor:
        return resize_pos_embed(self.pos_embed, gh, gw, mode=self.pos_interpolation)

    def prepare_tokens(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, _, h, w = x.shape
        tokens = self.patch_embed(x)
        if mask is not None:
            mask = mask.reshape(b, -1)
            if mask.shape[1] != tokens.shape[1]:
                raise ValueError(
                    f"mask has {mask.shape[1]} patches but the image has {tokens.shape[1]}"
                )
            # Replace before the position embedding is added, as iBOT does.
            tokens = put_mask_token(tokens, mask, self.masked_embed)
        cls = self.cls_token.expand(b, -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        return tokens + self.interpolate_pos_embed(h // self.patch_size, w // self.patch_size)

    def forward_features(
        self, x: Tensor, mask: Tensor | None = None, request: ReadoutRequest | None = None
    ) -> Features:
        recorder = ReadoutRecorder(request)
        x = self.prepare_tokens(x, mask)
        for i, blk in enumerate(self.blocks):
            want_cls, want_full = recorder.wants(i)
            x, cls_row, full = blk(x, want_cls, want_full)
            recorder.record(i, cls_row, full)
        x = self.norm(x)
        return Features(x[:, 0], x[:, 1:], recorder.readout)

    def last_blocks(self, x: Tensor, n: int) -> list[Features]:
        return [Features(t[:, 0], t[:, 1:], Readout()) for t in self.get_intermediate_layers(x, n)]

    def get_intermediate_layers(self, x: Tensor, n: int = 1) -> list[Tensor]:
        """Tokens ``[B, 1+N, D]`` of the last ``n`` blocks, each after the final norm (DINO's
        convention)."""
        x = self.prepare_tokens(x)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)[0]
            if i >= self.depth - n:
                outs.append(self.norm(x))
        return outs


def resize_pos_embed(
    pos: Tensor, gh: int, gw: int, prefix: int = 1, mode: str = "size"
) -> Tensor:
    """A square grid's position embedding ``[1, prefix + G*G, D]`` resized (bicubic) to a
    ``gh x gw`` grid; the ``prefix`` (CLS) positions are kept as they are. ``mode`` is one of
    :data:`POS_INTERPOLATIONS`."""
    n = pos.shape[1] - prefix
    g0 = int(math.isqrt(n))
    if gh == g0 and gw == g0:
        return pos
    head, grid = pos[:, :prefix], pos[:, prefix:]
    grid = grid.reshape(1, g0, g0, -1).permute(0, 3, 1, 2).float()
    if mode == "dino":
        # DINO / iBOT resample with the scale factor (g + 0.1) / g0 (the 0.1 guards the
        # output size against float error); the sampling positions follow that factor,
        # so they differ from an exact resize to g.
        scale = ((gh + 0.1) / g0, (gw + 0.1) / g0)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic")
    else:
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1).to(pos.dtype)
    return torch.cat([head, grid], dim=1)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
