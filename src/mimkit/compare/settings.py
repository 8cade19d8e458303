"""The ``eval:`` section of a compare config: one sub-section per evaluation, read with the
sectioned-config machinery of :mod:`mimkit.config` (types from the defaults, ranges declared
next to each field; a list's range applies to each element)::

    eval:
      knn: {every: 2, ks: [10, 20], features: [cls, cls+avgpool]}
      fewshot: {shots: [1, 5, 10], draws: 5}          # or true / false
      linear: {epochs: 100, features: last4}          # or true / false
      finetune: {recipe: fashion_mnist, strategies: [Random, Block], seeds: [0, 1, 2, 3, 4]}
      diagnostics: true                               # the default

Giving an optional evaluation's section turns it on; ``false`` turns it off. Every section
also names what its results depend on (:meth:`settings_key`): a change there evaluates again
(that evaluation only), never trains again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from mimkit.config import SectionedConfig, choice, ranged
from mimkit.errors import ConfigError
from mimkit.evaluate.features import FEATURE_MODES
from mimkit.finetune.config import load_finetune_config
from mimkit.ibot.mask_diagnostics import DIAGNOSTICS_VERSION

KNN_FEATURES = ("cls", "cls+avgpool")


@dataclass
class KnnEval:
    """Weighted k-NN of the teacher backbone on the val split against the train split, at
    every evaluated epoch; one result per feature set."""

    # evaluate (and keep a checkpoint) every N epochs, and the final epoch
    every: int = ranged(1, ">= 1")
    ks: list[int] = ranged(rule=">= 1", default_factory=lambda: [10, 20])
    features: list[str] = field(default_factory=lambda: ["cls"])
    temperature: float = ranged(0.07, "> 0")
    batch_size: int = ranged(256, ">= 1")  # of the feature extraction (every frozen evaluation)
    # the k of plots and headline tables (20 if evaluated, else the first)
    plot_k: int | None = ranged(None, ">= 1")

    @property
    def shown_k(self) -> int:
        if self.plot_k is not None:
            return self.plot_k
        return 20 if 20 in self.ks else self.ks[0]

    def settings_key(self) -> dict[str, Any]:
        return {"ks": sorted(self.ks), "temperature": self.temperature}


@dataclass
class FewshotEval:
    """k-NN with ``shots`` labelled train images per class (CLS features), averaged over
    ``draws`` draws of those images; final epoch."""

    enabled: bool = False
    shots: list[int] = ranged(rule=">= 1", default_factory=lambda: [1, 5, 10])
    draws: int = ranged(5, ">= 1")
    k: int = ranged(20, ">= 1")

    def settings_key(self, temperature: float) -> dict[str, Any]:
        return {"shots": sorted(self.shots), "draws": self.draws, "k": self.k, "t": temperature}


@dataclass
class LinearEval:
    """A linear probe on frozen features (DINO's protocol, cached features); final epoch, or
    every evaluated epoch with ``every``."""

    enabled: bool = False
    epochs: int = ranged(100, ">= 1")
    batch_size: int = ranged(256, ">= 1")
    lr: float | None = ranged(None, "> 0")  # default 0.003 x batch / 256
    features: str = choice("last4", FEATURE_MODES)
    every: bool = False

    def settings_key(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "features": self.features,
        }


@dataclass
class FinetuneEval:
    """End-to-end fine-tuning of the final teacher backbone with a shipped (or YAML)
    fine-tuning recipe, for the chosen strategies and seeds (default: all)."""

    enabled: bool = False
    recipe: str = "fashion_mnist"  # a shipped fine-tuning config's name, or a YAML path
    strategies: list[str] | None = None  # names or folder slugs (default: every strategy)
    seeds: list[int] | None = ranged(None, ">= 0")  # default: every seed

    def selects(self, strategy: str, slug: str, seed: int) -> bool:
        wanted = {s.strip().lower() for s in self.strategies or ()}
        return (
            self.enabled
            and (not wanted or strategy.lower() in wanted or slug in wanted)
            and (self.seeds is None or seed in self.seeds)
        )

    def settings_key(self) -> dict[str, Any]:
        """The recipe's name and what it holds: a changed recipe fine-tunes again."""
        text = json.dumps(load_finetune_config(self.recipe).to_dict(), sort_keys=True)
        return {"recipe": self.recipe, "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}


@dataclass
class DiagnosticsEval:
    """Why masks differ: object coverage, hardness, overlap with AttMask-High and the
    teacher's attention entropy on a fixed batch of val images, at every evaluated epoch
    (logged during training; computed from the checkpoint for runs trained without it)."""

    enabled: bool = True

    def settings_key(self) -> dict[str, Any]:
        return {"version": DIAGNOSTICS_VERSION}


# The flat spelling of the first compare configs, and where each setting lives now.
RENAMED = {
    "every": "knn.every",
    "knn_ks": "knn.ks",
    "temperature": "knn.temperature",
    "batch_size": "knn.batch_size",
    "plot_k": "knn.plot_k",
    "linear_epochs": "linear.epochs",
    "linear_batch_size": "linear.batch_size",
    "linear_lr": "linear.lr",
    "linear_features": "linear.features",
    "linear_every": "linear.every",
}
SWITCHABLE = ("fewshot", "linear", "finetune", "diagnostics")


@dataclass
class EvalSettings(SectionedConfig):
    knn: KnnEval = field(default_factory=KnnEval)
    fewshot: FewshotEval = field(default_factory=FewshotEval)
    linear: LinearEval = field(default_factory=LinearEval)
    finetune: FinetuneEval = field(default_factory=FinetuneEval)
    diagnostics: DiagnosticsEval = field(default_factory=DiagnosticsEval)

    @property
    def every(self) -> int:
        return self.knn.every

    @property
    def shown_k(self) -> int:
        return self.knn.shown_k

    @classmethod
    def from_yaml(cls, raw: Any) -> EvalSettings:
        """The ``eval:`` mapping of a compare config, checked: ``SECTION: true/false`` turns
        an optional evaluation on or off, a mapping gives its settings (and turns it on)."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError("eval must be a mapping of evaluations (knn, fewshot, ...)")
        sections: dict[str, Any] = {}
        for key, value in raw.items():
            if key in RENAMED:
                raise ConfigError(f"eval.{key} is now eval.{RENAMED[key]}")
            if key in SWITCHABLE and isinstance(value, bool):
                value = {"enabled": value}
            elif key in SWITCHABLE and isinstance(value, dict):
                value = {"enabled": True, **value}
            elif key == "knn" and isinstance(value, bool):
                raise ConfigError("eval.knn cannot be turned off: it is the grid's curve")
            sections[key] = value
        try:
            ev = cls.from_dict(sections)
        except ConfigError as err:
            text = str(err)
            named = text.split(".", 1)[0] in {f.name for f in dataclasses.fields(cls)}
            raise ConfigError(f"eval.{text}" if named else f"eval: {text}") from None
        ev.check()
        return ev

    def check(self) -> None:
        try:
            self.check_fields()
        except ConfigError as err:
            raise ConfigError(f"eval.{err}") from None
        k = self.knn
        if not k.ks:
            raise ConfigError("eval.knn.ks is empty")
        for name, values in (("knn.ks", k.ks), ("fewshot.shots", self.fewshot.shots)):
            if len(set(values)) != len(values):
                raise ConfigError(f"eval.{name} has duplicates: {values}")
        bad = [f for f in k.features if f not in KNN_FEATURES]
        if bad or not k.features or len(set(k.features)) != len(k.features):
            raise ConfigError(
                f"eval.knn.features must be distinct choices of {', '.join(KNN_FEATURES)}, "
                f"got {k.features}"
            )
        if k.plot_k is not None and k.plot_k not in k.ks:
            raise ConfigError(f"eval.knn.plot_k {k.plot_k} is not one of eval.knn.ks {k.ks}")
        if self.fewshot.enabled and not self.fewshot.shots:
            raise ConfigError("eval.fewshot.shots is empty")
        _optional_number(k.plot_k, "knn.plot_k", whole=True)
        _optional_number(self.linear.lr, "linear.lr", whole=False)
        ft = self.finetune
        if not ft.recipe:
            raise ConfigError("eval.finetune.recipe names no fine-tuning recipe")
        if ft.seeds is not None:
            ft.seeds = [
                _optional_number(s, "finetune.seeds", whole=True) for s in _listed(ft.seeds)
            ]
        if ft.strategies is not None:
            ft.strategies = [str(s) for s in _listed(ft.strategies)]


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _optional_number(value: Any, path: str, whole: bool) -> Any:
    """A field whose default is None takes what YAML gave: check that it is a number."""
    if value is None:
        return None
    kind = "an integer" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"eval.{path} must be {kind}, got {value!r}")
    if whole and not float(value).is_integer():
        raise ConfigError(f"eval.{path} must be {kind}, got {value!r}")
    return int(value) if whole else float(value)
