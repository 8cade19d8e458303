"""Any timm ``VisionTransformer`` as a mimkit backbone: ``--arch timm:NAME``.

timm builds the model (random weights; nothing is downloaded) and runs it. mimkit adds iBOT's
mask token (``masked_embed``, put in place of masked patch tokens before the position
embedding) and its attention read-outs: on the blocks a request names, and only there, the
block's attention is computed from the block's own ``qkv`` / ``q_norm`` / ``k_norm`` /
``proj`` modules so that its CLS row or full map can be reported; every other block runs
timm's own (fused) forward untouched. The timm model's parameters keep timm's names under
``vit.``, so ``mimkit export`` writes a file timm's same model loads strictly.

timm is an optional dependency: ``pip install 'mimkit[timm]'``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import Tensor, nn

from mimkit.errors import ConfigError
from mimkit.models.backbone import Backbone, Features
from mimkit.models.mask_token import put_mask_token
from mimkit.models.readout import Readout, ReadoutRecorder, ReadoutRequest, attention_with_readout
from mimkit.models.spec import TIMM_PREFIX, BackboneSpec


def _timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ConfigError(
            "--arch timm:NAME needs timm: pip install 'mimkit[timm]' (or pip install timm)"
        ) from None


def create_timm_vit(name: str, spec_kw: dict[str, Any], drop_path_rate: float = 0.0) -> nn.Module:
    """timm's model ``name`` without a classifier, checked to be a plain ViT mimkit can read."""
    timm = _timm()
    from timm.models.vision_transformer import Block, VisionTransformer

    if not timm.is_model(name):
        raise ConfigError(f"timm has no model {name!r} (see timm.list_models('vit_*'))")
    try:
        # dynamic_img_size: local crops are smaller than global ones (timm then resizes the
        # position embedding on the fly); it changes no parameter.
        model = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            drop_path_rate=drop_path_rate,
            dynamic_img_size=True,
            **spec_kw,
        )
    except TypeError:  # an argument only timm's ViTs take
        raise ConfigError(f"timm model {name!r} is not a ViT") from None
    except (RuntimeError, AssertionError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"timm cannot build {name!r} with {spec_kw}: {first}") from None
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"timm model {name!r} is a {type(model).__name__}, not a ViT")
    if any(type(b) is not Block for b in model.blocks):
        raise ConfigError(f"timm model {name!r} uses blocks mimkit cannot read attention from")
    return model


def timm_spec(
    arch: str, img_size: int | None, patch_size: int | None, in_chans: int = 3
) -> BackboneSpec:
    """Build the timm model on the meta device (no memory) to read its shape."""
    name = arch.removeprefix(TIMM_PREFIX)
    kw: dict[str, Any] = {"in_chans": in_chans}
    if img_size:
        kw["img_size"] = img_size
    if patch_size:
        kw["patch_size"] = patch_size
    with torch.device("meta"):
        model = create_timm_vit(name, kw)
    grid = model.patch_embed.grid_size
    patch = model.patch_embed.patch_size
    return BackboneSpec(
        family="timm",
        arch=arch,
        img_size=int(grid[0] * patch[0]),
        patch_size=int(patch[0]),
        embed_dim=int(model.embed_dim),
        depth=len(model.blocks),
        num_heads=int(model.blocks[0].attn.num_heads),
        in_chans=in_chans,
        cls_token=model.cls_token is not None,
    )


class TimmViT(Backbone):
    external_prefix = "vit."

    def __init__(self, spec: BackboneSpec, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.in_chans = spec.in_chans
        kw = {"img_size": spec.img_size, "patch_size": spec.patch_size, "in_chans": spec.in_chans}
        assert spec.arch is not None
        self.vit = create_timm_vit(spec.arch.removeprefix(TIMM_PREFIX), kw, drop_path_rate)
        self.embed_dim, self.depth, self.img_size = spec.embed_dim, spec.depth, spec.img_size
        self.prefix = int(self.vit.num_prefix_tokens)
        self.pool_token = self.vit.global_pool == "token"
        self.readouts = spec.readouts  # a CLS row needs a CLS token at position 0
        self.masked_embed = nn.Parameter(torch.zeros(1, spec.embed_dim))

    def grid_size(self, img_size: int | None = None) -> int:
        return (img_size or self.img_size) // self.spec.patch_size

    def no_weight_decay(self) -> set[str]:
        return {"masked_embed"} | {f"vit.{n}" for n in self.vit.no_weight_decay()}

    def _tokens(self, x: Tensor, mask: Tensor | None) -> Tensor:
        vit = self.vit
        tokens = vit.patch_embed(x)  # [B, H, W, D]
        if mask is not None:
            mask = mask.reshape(tokens.shape[:-1])
            tokens = put_mask_token(tokens, mask, self.masked_embed)
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens)))

    def _features(self, x: Tensor, readout: Readout) -> Features:
        x = self.vit.norm(x)
        pooled = self.vit.forward_head(x, pre_logits=True)
        return Features(pooled, x[:, self.prefix :], readout)

    def forward_features(
        self, x: Tensor, mask: Tensor | None = None, request: ReadoutRequest | None = None
    ) -> Features:
        if request is not None:
            self.check_request(request)
        recorder = ReadoutRecorder(request, self.prefix)
        x = self._tokens(x, mask)
        for i, blk in enumerate(self.vit.blocks):
            want_cls, want_full = recorder.wants(i)
            if want_cls or want_full:
                x, cls_row, full = _block_with_readout(blk, x, want_cls, want_full)
                recorder.record(i, cls_row, full)
            else:
                x = blk(x)
        return self._features(x, recorder.readout)

    def last_blocks(self, x: Tensor, n: int) -> list[Features]:
        x = self._tokens(x, None)
        outs = []
        for i, blk in enumerate(self.vit.blocks):
            x = blk(x)
            if i >= self.depth - n:
                outs.append(self._features(x, Readout()))
        return outs


def _block_with_readout(
    blk: nn.Module, x: Tensor, want_cls: bool, want_full: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """timm's ``Block.forward`` with its attention computed by mimkit from the block's own
    projections, so that the CLS row / full map can be reported."""
    attn = blk.attn
    y = blk.norm1(x)
    b, t, _ = y.shape
    qkv = attn.qkv(y).reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out, cls_row, full = attention_with_readout(q, k, v, attn.scale, want_cls, want_full)
    out = attn.norm(out.transpose(1, 2).reshape(b, t, -1))
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(y).sigmoid()
    out = attn.proj_drop(attn.proj(out))
    x = x + blk.drop_path1(blk.ls1(out))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, cls_row, full
