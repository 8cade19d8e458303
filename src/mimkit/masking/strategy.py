"""Mask strategy strings ``MODE[:OPTIONS][@SCORE]``: every mode and every score kind is one
record in one table (:data:`MODES`, :data:`SCORE_KINDS`), so a new strategy is one entry here.

Examples: ``random``, ``block``, ``green``, ``high`` (= ``high@raw:-1``, AttMask-High),
``high@raw:11``, ``hint@rollout:8-11``, ``low@power:-1:0.5``, ``high@log:4``,
``high@multi:4+8+11``, ``mix@pred`` (HPM), ``mix:0:1:cosine@raw``, ``sample:0.5@log``,
``sample@adv``.

Mode options: ``mix[:A0[:A1[:SHAPE]]]`` (alpha from A0 to A1 in [-1, 1], SHAPE one of
``constant``, ``linear``, ``cosine``, ``step``; without options ``masking.alpha`` and
``masking.alpha_schedule``), ``sample[:TAU]`` (TAU > 0, default 1), ``green[:S1:S2]``
(Gaussian widths in patches, 0 < S1 < S2).

SCORE is one of ``raw[:LAYER]``, ``log[:LAYER]``, ``power[:LAYER[:P]]`` (P > 0, default 0.5),
``rollout[:FIRST-LAST]`` (inclusive, default all blocks), ``multi:L1+L2+...``, and the learned
``pred`` (a per-patch loss predictor, HPM) and ``adv`` (an adversarial mask policy). Negative
layers count from the end (``-1`` is the last block).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.curriculum import Ramp
from mimkit.masking.green_noise import DEFAULT_SIGMAS, green_mask
from mimkit.masking.random_block import block_mask, random_mask
from mimkit.masking.scores import cls_attention_scores, minmax_normalize
from mimkit.masking.select import as_ratio, floor_count, mask_from_ranks, rank_mask, uniform
from mimkit.masking.stochastic import first_ranks, mix_mask, mix_ranks, sample_mask
from mimkit.models.backbone import CLS_ROWS, ROLLOUT, resolve_layer
from mimkit.models.readout import Readout, ReadoutRequest

DEFAULT_SCORE = "raw:-1"
DEFAULT_POWER = 0.5
DEFAULT_TAU = 1.0  # sample: softmax(score / tau)

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


# -- modes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeOptions:
    """A mode's own settings, from ``MODE:OPTIONS`` (see the module docstring)."""

    alpha: Ramp | None = None  # mix; None: from masking.alpha / masking.alpha_schedule
    tau: float = DEFAULT_TAU  # sample: softmax(score / tau)
    sigmas: tuple[float, float] = DEFAULT_SIGMAS  # green: the two Gaussians, in patches


@dataclass(frozen=True)
class Draw:
    """Everything one crop's plan is drawn from: no scores, so that it can be drawn ahead of
    the teacher (in the loader workers during training, see :mod:`mimkit.masking.plan`)."""

    batch: int
    grid: int
    ratio: Tensor  # [B] float64, on ``device``
    generator: torch.Generator | None
    device: torch.device
    show_max: float = 0.1  # hint: the top fraction it reveals from
    reveal_ratio: float | Tensor | None = None  # hint: AttMask's independent reveal ratio
    options: ModeOptions = ModeOptions()
    progress: float = 0.0  # of training, in [0, 1]: where mix's alpha schedule is

    @property
    def n(self) -> int:
        return self.grid * self.grid


class CropPlan(NamedTuple):
    """One crop's plan: ``masks [B, N]`` bool (the finished mask of a data-independent mode;
    for a scored mode the masked score *ranks*, for ``mix`` only the forced ones), ``keys``
    ``[B, N]`` float32 uniform draws the patches are ranked by (``mix``, ``sample``; None
    for the others) and ``counts [B]``, every image's exact number of masked patches."""

    masks: Tensor
    keys: Tensor | None
    counts: Tensor


@dataclass(frozen=True)
class Mode:
    """How one crop's mask is drawn. ``plan(Draw)`` makes every random draw (a
    :class:`CropPlan`); ``finish(scores [B, N], plan, options)`` puts it on the patches by
    the teacher's scores with no random draw (None: a data-independent mode, finished when
    planned). ``parse(args, where)`` reads ``MODE:OPTIONS``; ``describe`` writes them back."""

    plan: Callable[[Draw], CropPlan]
    finish: Callable[[Tensor, CropPlan, ModeOptions], Tensor] | None = None
    parse: Callable[[list[str], str], ModeOptions] | None = None  # None: takes no options
    describe: Callable[[ModeOptions], str] = lambda o: ""

    @property
    def scored(self) -> bool:
        return self.finish is not None


def _finished(mask: Tensor) -> CropPlan:
    return CropPlan(mask, None, mask.sum(1))


def _ranks(mode: str) -> Mode:
    def plan(d: Draw) -> CropPlan:
        return _finished(
            rank_mask(
                d.ratio, d.batch, d.n, mode, show_max=d.show_max,
                generator=d.generator, reveal_ratio=d.reveal_ratio,
            )
        )  # fmt: skip

    return Mode(plan, lambda scores, p, o: mask_from_ranks(scores, p.masks, mode))


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"bad {what} {text!r} in {where!r}: expected a number")
    return value


def _mix_plan(d: Draw) -> CropPlan:
    if d.options.alpha is None:
        raise ValueError("mix needs its alpha schedule: MaskStrategy.with_alpha first")
    alpha = d.options.alpha.at(d.progress)
    forced, k = mix_ranks(d.ratio, d.n, alpha)
    # Keys only when some rank is left to chance, so that |alpha| = 1 draws as high does.
    if abs(alpha) < 1:
        keys = uniform((d.batch, d.n), d.generator, d.device)
    else:
        keys = torch.zeros(d.batch, d.n, device=d.device)
    return CropPlan(forced, keys, k)


def _parse_mix(args: list[str], where: str) -> ModeOptions:
    if not args:
        return ModeOptions()
    if len(args) > 3:
        raise ConfigError(f"mode 'mix' is mix[:A0[:A1[:SHAPE]]] in {where!r}")
    values = [_number(a, "alpha", where) for a in args[:2]]
    end = values[-1]
    shape = args[2].lower() if len(args) == 3 else ("constant" if len(args) == 1 else "linear")
    return ModeOptions(alpha=Ramp(values[0], end, shape).check(f"alpha in {where!r}", -1, 1))


def _sample_plan(d: Draw) -> CropPlan:
    k = floor_count(d.ratio, d.n)
    return CropPlan(first_ranks(k, d.n), uniform((d.batch, d.n), d.generator, d.device), k)


def _parse_sample(args: list[str], where: str) -> ModeOptions:
    if len(args) > 1:
        raise ConfigError(f"mode 'sample' is sample[:TAU] in {where!r}")
    tau = _number(args[0], "temperature", where) if args else DEFAULT_TAU
    if tau <= 0:
        raise ConfigError(f"sample temperature must be > 0, got {tau:g} in {where!r}")
    return ModeOptions(tau=tau)


def _parse_green(args: list[str], where: str) -> ModeOptions:
    if not args:
        return ModeOptions()
    if len(args) != 2:
        raise ConfigError(f"mode 'green' is green[:SIGMA1:SIGMA2] in {where!r}")
    s1, s2 = (_number(a, "Gaussian width", where) for a in args)
    if not 0 < s1 < s2:
        raise ConfigError(f"green needs 0 < SIGMA1 < SIGMA2, got {s1:g}, {s2:g} in {where!r}")
    return ModeOptions(sigmas=(s1, s2))


MODES: dict[str, Mode] = {
    "random": Mode(lambda d: _finished(random_mask(d.batch, d.n, d.ratio, d.generator, d.device))),
    "block": Mode(
        lambda d: _finished(
            block_mask(d.batch, d.grid, d.ratio, d.generator, d.device).reshape(d.batch, -1)
        )
    ),
    "green": Mode(
        lambda d: _finished(
            green_mask(d.batch, d.grid, d.ratio, d.generator, d.device, d.options.sigmas)
        ),
        parse=_parse_green,
        describe=lambda o: "" if o.sigmas == DEFAULT_SIGMAS else ":{:g}:{:g}".format(*o.sigmas),
    ),
    "high": _ranks("high"),
    "low": _ranks("low"),
    "hint": _ranks("hint"),
    "mix": Mode(
        _mix_plan,
        lambda scores, p, o: mix_mask(scores, p.masks, p.keys, p.counts),
        _parse_mix,
        lambda o: "" if o.alpha is None else f":{o.alpha}",
    ),
    "sample": Mode(
        _sample_plan,
        lambda scores, p, o: sample_mask(scores, p.masks, p.keys, o.tau),
        _parse_sample,
        lambda o: "" if o.tau == DEFAULT_TAU else f":{o.tau:g}",
    ),
}
ATTENTION_MODES = tuple(name for name, mode in MODES.items() if mode.scored)


@dataclass(frozen=True)
class MaskStrategy:
    """One global crop's masking: a mode with its options and, for a scored mode, the score
    it ranks by."""

    mode: str
    score: ScoreSpec | None
    text: str
    options: ModeOptions = ModeOptions()

    @property
    def attention_guided(self) -> bool:
        """Whether it ranks patches by a score of the teacher's pass (attention or learned)."""
        return MODES[self.mode].scored

    @property
    def label(self) -> str:
        """``high@raw:5``-style text (layers as they are; ``random`` / ``block`` alone)."""
        mode = self.mode + MODES[self.mode].describe(self.options)
        return mode if self.score is None else f"{mode}@{self.score}"

    def resolve(self, depth: int) -> MaskStrategy:
        if self.score is None:
            return self
        return replace(self, score=self.score.resolve(depth, self.text))

    def with_alpha(self, default: Ramp) -> MaskStrategy:
        """``mix`` without its own schedule takes ``default`` (the config's)."""
        if self.mode != "mix" or self.options.alpha is not None:
            return self
        return replace(self, options=replace(self.options, alpha=default))


def plan_crop(
    strategy: MaskStrategy,
    batch: int,
    grid: int,
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    show_max: float = 0.1,
    reveal_ratio: float | Tensor | None = None,
    progress: float = 0.0,
) -> CropPlan:
    """One crop's plan on ``device``: every random draw of its mask, nothing that needs the
    teacher (see :class:`Mode`). ``progress``: of training, for ``mix``'s schedule."""
    device = torch.device(device)
    r = as_ratio(ratio, batch, device)
    draw = Draw(
        batch, grid, r, generator, device, show_max, reveal_ratio, strategy.options, progress
    )
    return MODES[strategy.mode].plan(draw)


def finish_crop(
    strategy: MaskStrategy,
    planned: CropPlan,
    readout: Readout | None,
    grid: int,
    device: torch.device | str | None = None,
) -> Tensor:
    """One crop's ``[B, G, G]`` bool mask (True = replaced by the mask token) on ``device``
    from its plan and, for scored modes, the readout of that crop's images only. No random
    draw happens here."""
    batch = planned.masks.shape[0]
    device = torch.device(device) if device is not None else planned.masks.device
    mode = MODES[strategy.mode]
    if mode.finish is None:
        m = planned.masks.to(device, non_blocking=True)
    elif not bool(planned.counts.any()):  # nothing masked (all skipped): no ranking, no readout
        m = torch.zeros(batch, grid * grid, dtype=torch.bool, device=device)
    else:
        if readout is None or strategy.score is None:
            raise ValueError(f"mask strategy {strategy.text!r} needs the teacher's readout")
        scores = strategy.score.compute(readout)
        if scores.shape != (batch, grid * grid):
            raise ValueError(
                f"scores of shape {tuple(scores.shape)} do not match a batch of {batch} "
                f"on a {grid}x{grid} grid"
            )
        m = mode.finish(scores.detach(), planned, strategy.options).to(device)
    return m.reshape(batch, grid, grid)


def mask_crop(
    strategy: MaskStrategy,
    readout: Readout | None,
    batch: int,
    grid: int,
    ratio: float | Tensor,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    show_max: float = 0.1,
    reveal_ratio: float | Tensor | None = None,
    progress: float = 0.0,
) -> Tensor:
    """One crop's ``[B, G, G]`` bool mask in one go: :func:`plan_crop` on ``device``, then
    :func:`finish_crop`. Training does the same in two places: the plan in the loader
    workers, the rest after the teacher's forward pass (:class:`mimkit.masking.MaskGenerator`)."""
    planned = plan_crop(
        strategy, batch, grid, ratio, generator, device, show_max, reveal_ratio, progress
    )
    return finish_crop(strategy, planned, readout, grid, device)


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
def _parse_score(text: str, where: str) -> ScoreSpec:
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
    spec = _parse_score(text.strip(), text)
    return spec.resolve(depth, text) if depth is not None else spec


def parse_strategy(text: str, depth: int | None = None) -> MaskStrategy:
    """Parse ``MODE[:OPTIONS][@SCORE]``; with ``depth``, check and resolve the layers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty mask strategy {text!r}")
    clean = text.strip()
    mode_text, sep, score_text = clean.partition("@")
    mode, *args = (part.strip() for part in mode_text.split(":"))
    mode = mode.lower()
    if mode not in MODES:
        raise ConfigError(
            f"unknown mask mode {mode!r} in {text!r}: choose one of {', '.join(MODES)}"
        )
    record = MODES[mode]
    if record.parse is None and args:
        raise ConfigError(f"mask mode {mode!r} takes no options, got {text!r}")
    options = record.parse(args, text) if record.parse is not None else ModeOptions()
    if not record.scored:
        if sep:
            raise ConfigError(f"mask mode {mode!r} takes no @SCORE, got {text!r}")
        return MaskStrategy(mode, None, clean, options)
    if sep and not score_text.strip():
        raise ConfigError(f"missing score after '@' in {text!r}")
    score = _parse_score(score_text.strip() if sep else DEFAULT_SCORE, text)
    allowed = score.record.modes
    if allowed is not None and mode not in allowed:
        raise ConfigError(
            f"score {score.kind!r} goes with mode {' or '.join(allowed)} only, got {text!r}"
        )
    strategy = MaskStrategy(mode, score, clean, options)
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
