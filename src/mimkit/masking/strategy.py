"""Mask strategy strings ``MODE[@SCORE]`` and the score specs they name.

Examples: ``random``, ``block``, ``high`` (= ``high@raw:-1``, AttMask-High), ``high@raw:11``,
``hint@rollout:8-11``, ``low@power:-1:0.5``, ``high@log:4``, ``high@multi:4+8+11``.

SCORE is one of ``raw[:LAYER]``, ``log[:LAYER]``, ``power[:LAYER[:P]]`` (P > 0, default 0.5),
``rollout[:FIRST-LAST]`` (inclusive, default all blocks) and ``multi:L1+L2+...``. Negative
layers count from the end (``-1`` is the last block).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.scores import cls_attention_scores, minmax_normalize
from mimkit.models.readout import Readout, ReadoutRequest

MODES = ("random", "block", "high", "low", "hint")
ATTENTION_MODES = ("high", "low", "hint")
SCORE_KINDS = ("raw", "log", "power", "rollout", "multi")
DEFAULT_SCORE = "raw:-1"
DEFAULT_POWER = 0.5

_INT = re.compile(r"^-?\d+$")
_RANGE = re.compile(r"^(-?\d+)-(-?\d+)$")
_REDUCE = {"raw": "mean", "log": "log", "power": "power"}


@dataclass(frozen=True)
class ScoreSpec:
    """A per-patch score: ``kind`` in raw/log/power/rollout/multi and the layers it reads.

    ``layers`` is ``(l,)`` for raw/log/power, ``(first, last)`` (inclusive) for rollout and
    ``(l1, l2, ...)`` for multi. ``power`` is the exponent of the ``power`` score.
    """

    kind: str
    layers: tuple[int, ...]
    power: float = DEFAULT_POWER

    def __str__(self) -> str:
        if self.kind == "rollout":
            return f"rollout:{self.layers[0]}-{self.layers[1]}"
        if self.kind == "multi":
            return "multi:" + "+".join(str(l) for l in self.layers)
        if self.kind == "power":
            return f"power:{self.layers[0]}:{self.power:g}"
        return f"{self.kind}:{self.layers[0]}"

    @property
    def resolved(self) -> bool:
        return all(l >= 0 for l in self.layers)

    def resolve(self, depth: int, where: str | None = None) -> ScoreSpec:
        """Map negative layers to ``0..depth-1``; raise ConfigError naming a bad layer or range."""
        where = where if where is not None else str(self)
        out = []
        for layer in self.layers:
            idx = layer + depth if layer < 0 else layer
            if not 0 <= idx < depth:
                raise ConfigError(
                    f"layer {layer} is out of range for a ViT of depth {depth} in {where!r}"
                )
            out.append(idx)
        if self.kind == "rollout" and out[0] > out[1]:
            raise ConfigError(
                f"rollout range {self.layers[0]}-{self.layers[1]} runs backwards "
                f"(block {out[0]} after block {out[1]}) in {where!r}"
            )
        return replace(self, layers=tuple(out))

    def readout_request(self, depth: int) -> ReadoutRequest:
        """What the teacher's forward pass must report for this score."""
        spec = self.resolve(depth)
        if spec.kind == "rollout":
            return ReadoutRequest(rollout_ranges=frozenset({(spec.layers[0], spec.layers[1])}))
        return ReadoutRequest(cls_layers=frozenset(spec.layers))

    def compute(self, readout: Readout) -> Tensor:
        """The score ``[B, N]`` from a readout (layers must be resolved: see ``resolve``)."""
        if not self.resolved:
            raise ValueError(f"score {self} has negative layers: call resolve(depth) first")
        if self.kind == "rollout":
            key = (self.layers[0], self.layers[1])
            if key not in readout.rollout:
                raise ValueError(f"the readout has no rollout for blocks {key} (score {self})")
            return readout.rollout[key][:, 0, 1:]
        maps = []
        for layer in self.layers:
            if layer not in readout.cls_attn:
                raise ValueError(f"the readout has no CLS attention of block {layer} ({self})")
            maps.append(readout.cls_attn[layer])
        if self.kind == "multi":
            per_layer = [minmax_normalize(cls_attention_scores(a, "mean")) for a in maps]
            return torch.stack(per_layer).mean(dim=0)
        return cls_attention_scores(maps[0], _REDUCE[self.kind], self.power)


@dataclass(frozen=True)
class MaskStrategy:
    """One global crop's masking: a mode and, for high/low/hint, the score it ranks by."""

    mode: str
    score: ScoreSpec | None
    text: str

    @property
    def attention_guided(self) -> bool:
        return self.mode in ATTENTION_MODES

    def resolve(self, depth: int) -> MaskStrategy:
        if self.score is None:
            return self
        return replace(self, score=self.score.resolve(depth, self.text))


def _layer(token: str, where: str) -> int:
    if not _INT.match(token):
        raise ConfigError(f"bad layer {token!r} in {where!r}: expected an integer")
    return int(token)


def _parse_score(text: str, where: str) -> ScoreSpec:
    parts = text.split(":")
    kind, args = parts[0].strip().lower(), [p.strip() for p in parts[1:]]
    if kind not in SCORE_KINDS:
        raise ConfigError(
            f"unknown score {kind!r} in {where!r}: choose one of {', '.join(SCORE_KINDS)}"
        )
    if kind in ("raw", "log"):
        if len(args) > 1:
            raise ConfigError(f"score {kind!r} takes one layer ({kind}[:LAYER]) in {where!r}")
        return ScoreSpec(kind, (_layer(args[0], where) if args else -1,))
    if kind == "power":
        if len(args) > 2:
            raise ConfigError(f"score 'power' is power[:LAYER[:P]] in {where!r}")
        layer = _layer(args[0], where) if args else -1
        power = DEFAULT_POWER
        if len(args) == 2:
            try:
                power = float(args[1])
            except ValueError:
                power = math.nan
            if not (power > 0 and math.isfinite(power)):
                raise ConfigError(
                    f"bad exponent {args[1]!r} in {where!r}: expected a finite number > 0"
                )
        return ScoreSpec("power", (layer,), power)
    if kind == "rollout":
        if len(args) > 1:
            raise ConfigError(f"score 'rollout' is rollout[:FIRST-LAST] in {where!r}")
        if not args:
            return ScoreSpec("rollout", (0, -1))
        m = _RANGE.match(args[0])
        if not m:
            raise ConfigError(
                f"bad rollout range {args[0]!r} in {where!r}: expected FIRST-LAST, e.g. 8-11"
            )
        first, last = int(m.group(1)), int(m.group(2))
        if (first >= 0) == (last >= 0) and first > last:
            raise ConfigError(f"rollout range {args[0]} runs backwards (first > last) in {where!r}")
        return ScoreSpec("rollout", (first, last))
    # multi
    if len(args) != 1 or not args[0]:
        raise ConfigError(f"score 'multi' needs layers, multi:L1+L2+..., in {where!r}")
    layers = tuple(_layer(t.strip(), where) for t in args[0].split("+"))
    return ScoreSpec("multi", layers)


def parse_score(text: str, depth: int | None = None) -> ScoreSpec:
    """Parse a SCORE (``raw:11``, ``rollout:8-11``, ...); with ``depth``, resolve its layers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty score {text!r}")
    spec = _parse_score(text.strip(), text)
    return spec.resolve(depth, text) if depth is not None else spec


def parse_strategy(text: str, depth: int | None = None) -> MaskStrategy:
    """Parse ``MODE[@SCORE]``; with ``depth``, check and resolve the layers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty mask strategy {text!r}")
    clean = text.strip()
    mode, sep, score_text = clean.partition("@")
    mode = mode.strip().lower()
    if mode not in MODES:
        raise ConfigError(
            f"unknown mask mode {mode!r} in {text!r}: choose one of {', '.join(MODES)}"
        )
    if mode not in ATTENTION_MODES:
        if sep:
            raise ConfigError(f"mask mode {mode!r} takes no @SCORE, got {text!r}")
        return MaskStrategy(mode, None, clean)
    if sep and not score_text.strip():
        raise ConfigError(f"missing score after '@' in {text!r}")
    score = _parse_score(score_text.strip() if sep else DEFAULT_SCORE, text)
    strategy = MaskStrategy(mode, score, clean)
    return strategy.resolve(depth) if depth is not None else strategy


def parse_strategies(
    texts: Sequence[str] | str, num_global_crops: int, depth: int
) -> list[MaskStrategy]:
    """One strategy per global crop: one string applies to all crops, else one per crop."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if num_global_crops < 1:
        raise ConfigError(f"need at least one global crop, got {num_global_crops}")
    if not texts:
        raise ConfigError("no mask strategy given")
    if len(texts) == 1:
        texts = texts * num_global_crops
    elif len(texts) != num_global_crops:
        raise ConfigError(f"{len(texts)} mask strategies given for {num_global_crops} global crops")
    return [parse_strategy(t, depth) for t in texts]
