"""The allowed range of every numeric config field, checked before any work starts.

Each rule is an interval written as text (``"> 0"``, ``">= 1"``, ``"[0, 1]"``, ``"(0, 1]"``);
a tuple field's rule applies to each element. A numeric field without a rule must still be
finite. ``None`` (an optional field left unset) always passes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

from mimkit.errors import ConfigError


@dataclass(frozen=True)
class Interval:
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    text: str = "finite"

    @classmethod
    def parse(cls, text: str) -> Interval:
        t = text.strip()
        if t[0] in "[(":
            lo, hi = (float(x) for x in t[1:-1].split(","))
            return cls(lo, hi, t[0] == "(", t[-1] == ")", t)
        op, value = t.split()
        bound = float(value)
        return {
            ">": cls(lo=bound, lo_open=True, text=t),
            ">=": cls(lo=bound, text=t),
            "<": cls(hi=bound, hi_open=True, text=t),
            "<=": cls(hi=bound, text=t),
        }[op]

    def contains(self, x: float) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return math.isfinite(x) and above and below


_RULES: dict[str, str] = {
    "model.img_size": ">= 1",
    "model.patch_size": ">= 1",
    "model.drop_path_rate": "[0, 1)",
    "model.out_dim": ">= 1",
    "model.patch_out_dim": ">= 1",
    "model.head_hidden_dim": ">= 1",
    "model.head_bottleneck_dim": ">= 1",
    "model.head_layers": ">= 1",
    "data.subset": "> 0",
    "data.num_workers": ">= 0",
    "data.global_crops": ">= 1",
    "data.local_crops": ">= 0",
    "data.local_crop_size": ">= 1",
    "data.global_scale": "(0, 1]",
    "data.local_scale": "(0, 1]",
    "data.flip_prob": "[0, 1]",
    "data.jitter_prob": "[0, 1]",
    "data.jitter_strength": "[0, 5]",
    "data.grayscale_prob": "[0, 1]",
    "data.blur_prob": "[0, 1]",
    "data.solarize_prob": "[0, 1]",
    "masking.ratio": "[0, 1)",
    "masking.mask_prob": "[0, 1]",
    "masking.show_max": "(0, 1]",
    "masking.start_epoch": ">= 0",
    "loss.lambda1": ">= 0",
    "loss.lambda2": ">= 0",
    "loss.lambda3": ">= 0",
    "loss.koleo": ">= 0",
    "loss.student_temp": "> 0",
    "loss.teacher_temp": "> 0",
    "loss.warmup_teacher_temp": "> 0",
    "loss.teacher_patch_temp": "> 0",
    "loss.warmup_teacher_patch_temp": "> 0",
    "loss.warmup_teacher_temp_epochs": ">= 0",
    "loss.center_momentum": "[0, 1]",
    "loss.contrastive_k": ">= 1",
    "loss.contrastive_tau": "> 0",
    "optim.epochs": ">= 1",
    "optim.batch_size": ">= 1",
    "optim.lr": "> 0",
    "optim.min_lr": ">= 0",
    "optim.warmup_epochs": ">= 0",
    "optim.weight_decay": ">= 0",
    "optim.weight_decay_end": ">= 0",
    "optim.clip_grad": ">= 0",  # 0 turns clipping off
    "optim.freeze_last_layer": ">= 0",
    "optim.momentum_teacher": "[0, 1]",
    "run.seed": ">= 0",
    "run.max_steps": ">= 1",
    "run.save_every_steps": ">= 0",  # 0 or unset: only at epoch ends
    "run.keep_every_epochs": ">= 0",
    "run.knn_every_epochs": ">= 0",
    "run.diagnostics_every_epochs": ">= 0",
    "run.log_every_steps": ">= 1",
    "run.threads": ">= 1",
}
_FINITE = Interval()


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def parse_rules(rules: dict[str, str]) -> dict[str, Interval]:
    """``{"section.field": "> 0"}`` -> the intervals :func:`check_ranges` takes."""
    return {k: Interval.parse(v) for k, v in rules.items()}


RANGES: dict[str, Interval] = parse_rules(_RULES)


def check_ranges(cfg: Any, ranges: dict[str, Interval] | None = None) -> None:
    """ConfigError naming the first numeric field of ``cfg`` (a sectioned config; by default
    a PretrainConfig checked against :data:`RANGES`) that is not finite or lies outside its
    range."""
    ranges = RANGES if ranges is None else ranges
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            path = f"{section.name}.{f.name}"
            value = getattr(part, f.name)
            values = list(value) if isinstance(value, (tuple, list)) else [value]
            if not all(_is_number(v) for v in values) or not values:
                continue  # strings, booleans, None and lists of strategy names
            rule = ranges.get(path, _FINITE)
            bad = next((v for v in values if not rule.contains(float(v))), None)
            if bad is None:
                continue
            each = " each" if len(values) > 1 else ""
            if not math.isfinite(bad):
                raise ConfigError(f"{path} must{each} be a finite number, got {value}")
            verb = "lie in" if rule.text[0] in "[(" else "be"
            raise ConfigError(f"{path} must{each} {verb} {rule.text}, got {value}")
