"""Swin Transformer backbone (Liu et al. 2021) as iBOT pretrains it.

Stages of shifted-window attention blocks with relative position bias; between stages, patch
merging halves the grid and doubles the width. For masked image modeling the mask lives on
the **final-stage** grid (``grid_size``): it is upsampled to the patch-embedding grid, where
masked patch tokens are replaced by the mask token, and the patch loss is computed on the
final-stage tokens. There is no CLS token: the pooled token is the mean of the final-stage
tokens after the last norm, and no attention read-out is offered (so attention-guided mask
strategies are refused for Swin at start-up).

Inputs whose grid is not a multiple of the window (e.g. local crops) are padded per block;
a stage whose grid is smaller than the window uses one window of the grid's size, without
shifting. Parameter names follow timm's ``swin_transformer`` layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from mimkit.models.backbone import Backbone, Features
from mimkit.models.mask_token import put_mask_token
from mimkit.models.readout import Readout, ReadoutRequest
from mimkit.models.spec import BackboneSpec
from mimkit.models.vit import Mlp, _init_weights


def window_partition(x: Tensor, w: int) -> Tensor:
    """``[B, H, W, C]`` -> ``[B, nW, w*w, C]`` (H and W multiples of ``w``)."""
    b, h, wd, c = x.shape
    x = x.reshape(b, h // w, w, wd // w, w, c).transpose(2, 3)
    return x.reshape(b, (h // w) * (wd // w), w * w, c)


def window_reverse(windows: Tensor, w: int, h: int, wd: int) -> Tensor:
    """Inverse of :func:`window_partition`."""
    b, c = windows.shape[0], windows.shape[-1]
    x = windows.reshape(b, h // w, wd // w, w, w, c).transpose(2, 3)
    return x.reshape(b, h, wd, c)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        table = torch.zeros((2 * window - 1) ** 2, num_heads)
        self.relative_position_bias_table = nn.Parameter(table)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, w: int) -> Tensor:
        """``[H, w*w, w*w]`` from the table (a window smaller than the table's reads part of it)."""
        ar = torch.arange(w, device=self.relative_position_bias_table.device)
        coords = torch.stack(torch.meshgrid(ar, ar, indexing="ij")).flatten(1)  # [2, n]
        rel = coords[:, :, None] - coords[:, None, :] + self.window - 1  # [2, n, n]
        index = rel[0] * (2 * self.window - 1) + rel[1]
        return self.relative_position_bias_table[index].permute(2, 0, 1)

    def forward(self, x: Tensor, w: int, shift_mask: Tensor | None) -> Tensor:
        """``x``: ``[B, nW, n, C]`` windows; ``shift_mask``: ``[nW, n, n]`` additive, or None."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).reshape(b, nw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # [B, nW, H, n, hd]
        bias = self.position_bias(w).to(q.dtype)[None]  # [1, H, n, n]
        if shift_mask is not None:
            bias = bias + shift_mask[:, None].to(q.dtype)  # [nW, H, n, n]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


def shift_mask(h: int, wd: int, w: int, shift: int, device: torch.device) -> Tensor:
    """``[nW, w*w, w*w]``: -100 where two tokens of a shifted window come from different
    regions of the cyclically shifted map (they may not attend to each other), else 0."""
    region = torch.zeros(1, h, wd, 1, device=device)
    cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
    for i, (rows, cols) in enumerate((r, c) for r in cuts for c in cuts):
        region[:, rows, cols] = i
    ids = window_partition(region, w)[0, :, :, 0]  # [nW, n]
    return (ids[:, None, :] != ids[:, :, None]).float() * -100.0


class SwinBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        window: int,
        shifted: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window, self.shifted = window, shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, qkv_bias)
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, H, W, C]`` -> the same shape."""
        b, h, wd, c = x.shape
        w = min(self.window, h, wd)
        shift = w // 2 if self.shifted and min(h, wd) > w else 0
        y = self.norm1(x)
        ph, pw = (-h) % w, (-wd) % w
        y = F.pad(y, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, wd + pw
        mask = None
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
            mask = shift_mask(hp, wp, w, shift, x.device)
        y = window_reverse(self.attn(window_partition(y, w), w, mask), w, hp, wp)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :wd])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens -> one token of twice the width."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, spec: BackboneSpec, stage: int, rates: list[float]) -> None:
        super().__init__()
        dim, heads = spec.embed_dim * 2**stage, spec.num_heads * 2**stage
        self.downsample = PatchMerging(dim // 2) if stage else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, spec.window, j % 2 == 1, spec.mlp_ratio, spec.qkv_bias, r)
            for j, r in enumerate(rates)
        )


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # [B, H, W, C]


class SwinTransformer(Backbone):
    def __init__(self, spec: BackboneSpec, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.in_chans = spec.in_chans
        self.img_size, self.depth = spec.img_size, spec.depth
        stages = len(spec.depths)
        self.embed_dim = spec.embed_dim * 2 ** (stages - 1)
        self.patch_embed = PatchEmbed(spec.patch_size, spec.in_chans, spec.embed_dim)
        self.masked_embed = nn.Parameter(torch.zeros(1, spec.embed_dim))
        rates = torch.linspace(0, drop_path_rate, spec.depth).tolist()
        bounds = [sum(spec.depths[:s]) for s in range(stages + 1)]
        self.layers = nn.ModuleList(
            SwinStage(spec, s, rates[bounds[s] : bounds[s + 1]]) for s in range(stages)
        )
        self.norm = nn.LayerNorm(self.embed_dim)
        self.apply(_init_weights)

    def grid_size(self, img_size: int | None = None) -> int:
        return self.spec.grid_size(img_size)

    def no_weight_decay(self) -> set[str]:
        tables = {n for n, _ in self.named_parameters() if n.endswith("position_bias_table")}
        return {"masked_embed"} | tables

    def layer_id(self, name: str) -> int:
        """Blocks are numbered across stages in the order they run; a stage's patch merging
        shares the layer of the block before it."""
        parts = name.split(".")
        if parts[0] == "layers":
            before = sum(self.spec.depths[: int(parts[1])])
            return before + int(parts[3]) + 1 if parts[2] == "blocks" else before
        return 0 if parts[0] in ("patch_embed", "masked_embed") else self.depth + 1

    def _embed(self, x: Tensor, mask: Tensor | None) -> Tensor:
        tokens = self.patch_embed(x)  # [B, H, W, C]
        if mask is not None:
            b, h = tokens.shape[:2]
            g = self.grid_size(x.shape[-2])
            mask = mask.reshape(b, g, g)
            up = h // g  # one final-stage token covers up x up patch tokens
            mask = mask.repeat_interleave(up, 1).repeat_interleave(up, 2)
            tokens = put_mask_token(tokens, mask, self.masked_embed)
        return tokens

    def _features(self, x: Tensor) -> Features:
        x = self.norm(x).flatten(1, 2)  # [B, N, D]
        return Features(x.mean(dim=1), x, Readout())

    def forward_features(
        self, x: Tensor, mask: Tensor | None = None, request: ReadoutRequest | None = None
    ) -> Features:
        if request is not None:
            self.check_request(request)
        x = self._embed(x, mask)
        for stage in self.layers:
            x = stage.downsample(x)
            for blk in stage.blocks:
                x = blk(x)
        return self._features(x)

    def last_blocks(self, x: Tensor, n: int) -> list[Features]:
        """After each of the last ``n`` blocks of the final stage (at most its depth)."""
        x = self._embed(x, None)
        outs = []
        for s, stage in enumerate(self.layers):
            x = stage.downsample(x)
            for j, blk in enumerate(stage.blocks):
                x = blk(x)
                if s == len(self.layers) - 1 and j >= len(stage.blocks) - n:
                    outs.append(self._features(x))
        return outs
