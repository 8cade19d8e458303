"""Per-patch scores that attention-guided masks rank by, ``KIND[:ARGS]``: every kind is one
record in :data:`SCORE_KINDS`.

``raw[:LAYER]``, ``log[:LAYER]``, ``power[:LAYER[:P]]`` (P > 0, default 0.5),
``rollout[:FIRST-LAST]`` (inclusive, default all blocks), ``multi:L1+L2+...``, and the learned
``pred`` (a per-patch loss predictor, HPM) and ``adv`` (an adversarial mask policy). Negative
layers count from the end (``-1`` is the last block).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.scores import cls_attention_scores, minmax_normalize
from mimkit.models.backbone import CLS_ROWS, ROLLOUT, resolve_layer
from mimkit.models.readout import Readout, ReadoutRequest

DEFAULT_SCORE = "raw:-1"
DEFAULT_POWER = 0.5

_INT = re.compile(r"^-?\d+$")
_RANGE = re.compile(r"^(-?\d+)-(-?\d+)$")


@dataclass(frozen=True)
class ScoreSpec:
    """A per-patch score: ``kind`` (a key of :data:`SCORE_KINDS`) and the layers it reads.

    ``layers`` is ``(l,)`` for raw/log/power, ``(first, last)`` (inclusive) for rollout and
    ``(l1, l2, ...)`` for multi. ``power`` is the exponent of the ``power`` score.
    """

    kind: str
    layers: tuple[int, ...]
    power: float = DEFAULT_POWER

    @property
    def record(self) -> ScoreKind:
        return SCORE_KINDS[self.kind]

    def __str__(self) -> str:
        return self.record.describe(self)

    @property
    def resolved(self) -> bool:
        return all(l >= 0 for l in self.layers)

    @property
    def needs(self) -> str | None:
        """The backbone read-out the score is computed from (``CLS_ROWS`` or ``ROLLOUT``;
        None for a learned score, which a head computes from the patch tokens)."""
        return self.record.readout

    @property
    def learned(self) -> bool:
        return self.record.readout is None

    def resolve(self, depth: int, where: str | None = None) -> ScoreSpec:
        """Map negative layers to ``0..depth-1``; raise ConfigError naming a bad layer or range."""
        where = where if where is not None else str(self)
        out = tuple(resolve_layer(layer, depth, where) for layer in self.layers)
        if self.record.ranged and out[0] > out[1]:
            raise ConfigError(
                f"rollout range {self.layers[0]}-{self.layers[1]} runs backwards "
                f"(block {out[0]} after block {out[1]}) in {where!r}"
            )
        return replace(self, layers=out)

    def readout_request(self, depth: int) -> ReadoutRequest:
        """What the teacher's forward pass must report for this score."""
        spec = self.resolve(depth)
        if spec.learned:
            return ReadoutRequest()
        if spec.record.ranged:
            return ReadoutRequest(rollout_ranges=frozenset({(spec.layers[0], spec.layers[1])}))
        return ReadoutRequest(cls_layers=frozenset(spec.layers))

    def compute(self, readout: Readout) -> Tensor:
        """The score ``[B, N]`` from a readout (layers must be resolved: see ``resolve``)."""
        if not self.resolved:
            raise ValueError(f"score {self} has negative layers: call resolve(depth) first")
        return self.record.compute(self, readout)


# -- score kinds --------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreKind:
    readout: str | None  # the read-out it needs: CLS_ROWS, ROLLOUT, or None (a learned head)
    parse: Callable[[list[str], str], ScoreSpec]  # arguments after "KIND:", where -> spec
    describe: Callable[[ScoreSpec], str]
    compute: Callable[[ScoreSpec, Readout], Tensor]  # resolved spec, readout -> [B, N]
    ranged: bool = False  # layers are an inclusive (first, last) range of blocks
    modes: tuple[str, ...] | None = None  # the modes it may be used with (None: every one)


def _layer(token: str, where: str) -> int:
    if not _INT.match(token):
        raise ConfigError(f"bad layer {token!r} in {where!r}: expected an integer")
    return int(token)


def _cls_maps(spec: ScoreSpec, readout: Readout) -> list[Tensor]:
    for layer in spec.layers:
        if layer not in readout.cls_attn:
            raise ValueError(f"the readout has no CLS attention of block {layer} ({spec})")
    return [readout.cls_attn[layer] for layer in spec.layers]


def _one_layer(kind: str, reduce: str) -> ScoreKind:
    """raw / log: one block's CLS attention reduced over heads."""

    def parse(args: list[str], where: str) -> ScoreSpec:
        if len(args) > 1:
            raise ConfigError(f"score {kind!r} takes one layer ({kind}[:LAYER]) in {where!r}")
        return ScoreSpec(kind, (_layer(args[0], where) if args else -1,))

    return ScoreKind(
        CLS_ROWS,
        parse,
        lambda s: f"{kind}:{s.layers[0]}",
        lambda s, ro: cls_attention_scores(_cls_maps(s, ro)[0], reduce),
    )


def _parse_power(args: list[str], where: str) -> ScoreSpec:
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


def _parse_rollout(args: list[str], where: str) -> ScoreSpec:
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


def _rollout(spec: ScoreSpec, readout: Readout) -> Tensor:
    key = (spec.layers[0], spec.layers[1])
    if key not in readout.rollout:
        raise ValueError(f"the readout has no rollout for blocks {key} (score {spec})")
    return readout.rollout[key]


def _parse_multi(args: list[str], where: str) -> ScoreSpec:
    if len(args) != 1 or not args[0]:
        raise ConfigError(f"score 'multi' needs layers, multi:L1+L2+..., in {where!r}")
    return ScoreSpec("multi", tuple(_layer(t.strip(), where) for t in args[0].split("+")))


def _multi(spec: ScoreSpec, readout: Readout) -> Tensor:
    per_layer = [
        minmax_normalize(cls_attention_scores(a, "mean")) for a in _cls_maps(spec, readout)
    ]
    return torch.stack(per_layer).mean(dim=0)


def _learned(kind: str, modes: tuple[str, ...] | None = None) -> ScoreKind:
    """A score a head computes from the teacher pass's patch tokens (``models/score_heads.py``)
    and puts in the readout, under its kind."""

    def parse(args: list[str], where: str) -> ScoreSpec:
        if args:
            raise ConfigError(f"score {kind!r} takes no arguments in {where!r}")
        return ScoreSpec(kind, ())

    def compute(spec: ScoreSpec, readout: Readout) -> Tensor:
        if kind not in readout.patch_scores:
            raise ValueError(f"the readout has no {kind!r} scores (its head did not run)")
        return readout.patch_scores[kind]

    return ScoreKind(None, parse, lambda s: kind, compute, modes=modes)


SCORE_KINDS: dict[str, ScoreKind] = {
    "raw": _one_layer("raw", "mean"),
    "log": _one_layer("log", "log"),
    "power": ScoreKind(
        CLS_ROWS,
        _parse_power,
        lambda s: f"power:{s.layers[0]}:{s.power:g}",
        lambda s, ro: cls_attention_scores(_cls_maps(s, ro)[0], "power", s.power),
    ),
    "rollout": ScoreKind(
        ROLLOUT, _parse_rollout, lambda s: f"rollout:{s.layers[0]}-{s.layers[1]}", _rollout, True
    ),
    "multi": ScoreKind(
        CLS_ROWS, _parse_multi, lambda s: "multi:" + "+".join(map(str, s.layers)), _multi
    ),
    "pred": _learned("pred"),  # HPM's loss predictor, its EMA copy on the teacher's tokens
    # The adversarial policy's masks are (Gumbel-)top-k of its logits: its estimators
    # (straight-through, Plackett-Luce) are built for that.
    "adv": _learned("adv", ("sample", "high")),
}


def readout_request(
    scores: Iterable[ScoreSpec | None], depth: int, base: ReadoutRequest | None = None
) -> ReadoutRequest:
    """What the teacher must report for these scores (None: a data-independent strategy)."""
    requests = [s.readout_request(depth) for s in scores if s is not None]
    return ReadoutRequest.union([base or ReadoutRequest(), *requests])


def check_supported(scores: Iterable[ScoreSpec | None], readouts: frozenset[str], arch: str):
    """ConfigError when a score needs a read-out the backbone ``arch`` cannot give."""
    for spec in scores:
        if spec is not None and not spec.learned and spec.needs not in readouts:
            what = "CLS attention" if spec.needs == CLS_ROWS else "attention rollout"
            raise ConfigError(
                f"score {spec} needs the backbone's {what}, which {arch} cannot report "
                "(use random or block masks with it)"
            )


# -- parsing ------------------------------------------------------------------------------
def score_from_text(text: str, where: str) -> ScoreSpec:
    parts = text.split(":")
    kind, args = parts[0].strip().lower(), [p.strip() for p in parts[1:]]
    if kind not in SCORE_KINDS:
        raise ConfigError(
            f"unknown score {kind!r} in {where!r}: choose one of {', '.join(SCORE_KINDS)}"
        )
    return SCORE_KINDS[kind].parse(args, where)


def parse_score(text: str, depth: int | None = None) -> ScoreSpec:
    """Parse a SCORE (``raw:11``, ``rollout:8-11``, ...); with ``depth``, resolve its layers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty score {text!r}")
    spec = score_from_text(text.strip(), text)
    return spec.resolve(depth, text) if depth is not None else spec
