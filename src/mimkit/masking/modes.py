"""How one crop's mask is drawn, ``MODE[:OPTIONS]``: every mode is one record in
:data:`MODES`. A data-independent mode (random, block, green) is finished when planned; a scored
mode (high, low, hint, mix, sample) is planned ahead of the teacher and finished from its scores.

Options: ``mix[:A0[:A1[:SHAPE]]]`` (alpha from A0 to A1 in [-1, 1], SHAPE one of ``constant``,
``linear``, ``cosine``, ``step``; without options ``masking.alpha`` and
``masking.alpha_schedule``), ``sample[:TAU]`` (TAU > 0, default 1), ``green[:S1:S2]`` (Gaussian
widths in patches, 0 < S1 < S2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from mimkit.errors import ConfigError
from mimkit.masking.curriculum import Ramp
from mimkit.masking.green_noise import DEFAULT_SIGMAS, green_mask
from mimkit.masking.random_block import block_mask, random_mask
from mimkit.masking.select import floor_count, mask_from_ranks, rank_mask, uniform
from mimkit.masking.stochastic import first_ranks, mix_mask, mix_ranks, sample_mask

DEFAULT_TAU = 1.0  # sample: softmax(score / tau)


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
