"""Compare configs: a base pretraining config, shared overrides, seeds, epoch budgets, the
evaluation settings and a list of strategies; expanded into a grid of runs and validated up
front (every run's :class:`~mimkit.config.PretrainConfig` is built and checked before any
training starts).

A compare config is YAML::

    base: fashion_mnist_vit_mini        # shipped config name or path
    overrides: {model.arch: vit_micro}  # dotted keys, applied to every run
    seeds: [0, 1, 2]
    epochs: 8                           # or a list of budgets: [4, 8]
    eval: {knn: {every: 2, ks: [10, 20]}, linear: false}   # see compare/settings.py
    strategies:
      - {name: AttMask-High, mask: [high]}
      - {name: Random, mask: [random], seeds: [0]}
      - {name: High + contrastive, mask: [high], overrides: {loss.lambda3: 0.5}}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mimkit.compare.settings import EvalSettings
from mimkit.config import config_text, read_config_file, shipped_config_names
from mimkit.errors import ConfigError, MimkitError
from mimkit.ibot.config import PretrainConfig, load_config

SHIPPED_COMPARE_CONFIGS = "compare"  # folder inside mimkit/configs

TOP_KEYS = ("base", "overrides", "seeds", "epochs", "eval", "strategies", "description")
STRATEGY_KEYS = ("name", "mask", "overrides", "seeds", "epochs")

# Config sections (and run fields) that change what a run computes: a run folder trained
# with other values cannot be reused.
_IDENTITY_SECTIONS = ("model", "data", "masking", "loss", "optim")
_IDENTITY_RUN_FIELDS = ("seed", "amp")


@dataclass
class Strategy:
    name: str
    slug: str
    mask: list[str] | None
    overrides: list[tuple[str, Any]]
    seeds: list[int]
    epochs: list[int | None]


@dataclass
class RunSpec:
    """One (strategy, seed, epoch budget) of the grid, with its full pretraining config."""

    strategy: Strategy
    seed: int
    epochs: int
    name: str  # folder name under OUT/runs
    config: PretrainConfig
    every: int = 1

    @property
    def out(self) -> Path:
        return Path(self.config.run.output_dir)

    @property
    def eval_epochs(self) -> list[int]:
        """Epochs evaluated: every ``every`` epochs, and always the last one."""
        out = list(range(self.every, self.epochs + 1, self.every))
        if not out or out[-1] != self.epochs:
            out.append(self.epochs)
        return out


@dataclass
class CompareConfig:
    source: str
    base: str
    overrides: list[tuple[str, Any]]
    seeds: list[int]
    epochs: list[int | None]
    eval: EvalSettings
    strategies: list[Strategy]
    description: str = ""

    @property
    def multi_budget(self) -> bool:
        return any(len(s.epochs) > 1 for s in self.strategies) or len(self.epochs) > 1


# -- reading ----------------------------------------------------------------------------
def shipped_compare_names() -> list[str]:
    return shipped_config_names(SHIPPED_COMPARE_CONFIGS)


def read_compare_file_text(name_or_path: str) -> tuple[str, str]:
    """The text of a compare config given by path or shipped name, and where it came from."""
    return config_text(name_or_path, SHIPPED_COMPARE_CONFIGS)


def read_compare_file(name_or_path: str) -> tuple[dict[str, Any], str]:
    """The YAML mapping of a compare config given by path or shipped name, and its source."""
    data = read_config_file(name_or_path, SHIPPED_COMPARE_CONFIGS)
    return data, read_compare_file_text(name_or_path)[1]


def _flatten_overrides(value: Any, where: str) -> list[tuple[str, Any]]:
    """``{a.b: v}`` or ``{a: {b: v}}`` -> ``[("a.b", v)]`` (order kept)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of section.field: value")
    out: list[tuple[str, Any]] = []
    for key, v in value.items():
        key = str(key)
        if "." not in key and isinstance(v, dict):
            out.extend((f"{key}.{k}", vv) for k, vv in v.items())
        else:
            out.append((key, v))
    return out


def _int_list(value: Any, where: str, minimum: int) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where} is empty")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{where} must be integers >= {minimum}, got {value!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ConfigError(f"{where} has duplicates: {value!r}")
    return out


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "strategy"


def parse_compare_config(
    data: dict[str, Any], source: str = "<dict>", extra_overrides: list[tuple[str, Any]] = ()
) -> CompareConfig:
    """Check the structure of a compare config (not yet the runs: see :func:`build_grid`)."""
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown compare config key {unknown[0]!r}; known: {', '.join(TOP_KEYS)}"
        )
    base = data.get("base")
    if not isinstance(base, str) or not base:
        raise ConfigError("compare config needs base: a shipped config name or a YAML path")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute() and source not in ("<dict>",) and Path(source).is_file():
        candidate = Path(source).parent / base_path
        if candidate.is_file() and not base_path.is_file():
            base = str(candidate)
    overrides = _flatten_overrides(data.get("overrides"), "overrides") + list(extra_overrides)
    seeds = _int_list(data.get("seeds", [0]), "seeds", 0)
    epochs: list[int | None] = (
        _int_list(data["epochs"], "epochs", 1) if data.get("epochs") is not None else [None]
    )
    ev = EvalSettings.from_yaml(data.get("eval"))
    raw_strategies = data.get("strategies")
    if not isinstance(raw_strategies, list) or not raw_strategies:
        raise ConfigError("compare config needs strategies: a non-empty list")
    strategies: list[Strategy] = []
    slugs: dict[str, str] = {}
    for i, item in enumerate(raw_strategies):
        where = f"strategies[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a mapping with name and mask")
        bad = [k for k in item if k not in STRATEGY_KEYS]
        if bad:
            raise ConfigError(f"{where}: unknown key {bad[0]!r}; known: {', '.join(STRATEGY_KEYS)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where} needs a name")
        name = name.strip()
        where = f"strategy {name!r}"
        mask = item.get("mask")
        if mask is not None:
            mask = [mask] if isinstance(mask, str) else mask
            if not isinstance(mask, list) or not mask or not all(isinstance(m, str) for m in mask):
                raise ConfigError(f"{where}: mask must be a strategy string or a list of them")
        slug = slugify(name)
        if slug in slugs:
            raise ConfigError(
                f"{where}: its folder name {slug!r} clashes with strategy {slugs[slug]!r}"
            )
        slugs[slug] = name
        s_seeds = _int_list(item["seeds"], f"{where}: seeds", 0) if "seeds" in item else seeds
        s_epochs = (
            _int_list(item["epochs"], f"{where}: epochs", 1)
            if item.get("epochs") is not None
            else epochs
        )
        strategies.append(
            Strategy(
                name=name,
                slug=slug,
                mask=list(mask) if mask else None,
                overrides=_flatten_overrides(item.get("overrides"), f"{where}: overrides"),
                seeds=s_seeds,
                epochs=s_epochs,
            )
        )
    _check_finetune_selection(ev, strategies)
    return CompareConfig(
        source=source,
        base=base,
        overrides=overrides,
        seeds=seeds,
        epochs=epochs,
        eval=ev,
        strategies=strategies,
        description=str(data.get("description") or ""),
    )


def _check_finetune_selection(ev: EvalSettings, strategies: list[Strategy]) -> None:
    known = {s.name.lower() for s in strategies} | {s.slug for s in strategies}
    for name in ev.finetune.strategies or ():
        if name.strip().lower() not in known:
            names = ", ".join(s.name for s in strategies)
            raise ConfigError(
                f"eval.finetune.strategies: {name!r} is not a strategy of this config ({names})"
            )


def load_compare_config(
    name_or_path: str, extra_overrides: list[tuple[str, Any]] = ()
) -> CompareConfig:
    data, source = read_compare_file(name_or_path)
    return parse_compare_config(data, source, extra_overrides)


def baseline_strategy(cc: CompareConfig, name: str | None = None) -> str:
    """The strategy the others are tested against: ``name`` (a strategy's name or folder
    slug), else Random when the grid has it, else the first strategy."""
    by_key = {s.name.lower(): s.name for s in cc.strategies}
    by_key.update({s.slug: s.name for s in cc.strategies})
    if name is None:
        return by_key.get("random", cc.strategies[0].name)
    found = by_key.get(name.strip().lower())
    if found is None:
        names = ", ".join(s.name for s in cc.strategies)
        raise ConfigError(f"--baseline {name!r} is not a strategy of this config ({names})")
    return found


# -- the grid ---------------------------------------------------------------------------
def run_name(strategy: Strategy, seed: int, epochs: int, multi_budget: bool) -> str:
    return f"{strategy.slug}-s{seed}" + (f"-e{epochs}" if multi_budget else "")


def build_run_config(
    cc: CompareConfig, strategy: Strategy, seed: int, epochs: int | None, run_dir: Path
) -> PretrainConfig:
    overrides = list(cc.overrides) + list(strategy.overrides)
    if strategy.mask is not None:
        overrides.append(("masking.strategies", list(strategy.mask)))
    if epochs is not None:
        overrides.append(("optim.epochs", epochs))
    overrides += [
        ("run.seed", seed),
        ("run.output_dir", str(run_dir)),
        ("run.keep_every_epochs", cc.eval.every),
        ("run.final_knn", False),
        ("run.knn_every_epochs", 0),
        ("run.diagnostics_every_epochs", cc.eval.every if cc.eval.diagnostics.enabled else 0),
    ]
    return load_config(cc.base, overrides)


def build_grid(cc: CompareConfig, out: str | Path) -> list[RunSpec]:
    """Every run of the grid, each config built and validated; raises before anything is
    written. Errors name the strategy."""
    from mimkit.ibot.validation import validate_config

    out = Path(out)
    try:
        load_config(cc.base)
    except MimkitError as err:
        raise ConfigError(f"base {cc.base!r}: {err}") from None
    try:
        load_config(cc.base, cc.overrides)
    except MimkitError as err:
        raise ConfigError(f"overrides: {err}") from None
    runs: list[RunSpec] = []
    # Validated once per distinct config, not once per seed.
    validated: set[str] = set()
    for s in cc.strategies:
        for epochs in s.epochs:
            for seed in s.seeds:
                try:
                    # The budget is needed for the folder name: resolve it first.
                    cfg = build_run_config(cc, s, seed, epochs, out)
                    budget = cfg.optim.epochs
                    name = run_name(s, seed, budget, cc.multi_budget)
                    cfg = build_run_config(cc, s, seed, epochs, out / "runs" / name)
                    key = _validation_key(cfg)
                    if key not in validated:
                        validate_config(cfg)
                        validated.add(key)
                except MimkitError as err:
                    raise ConfigError(f"strategy {s.name!r} (seed {seed}): {err}") from None
                runs.append(
                    RunSpec(
                        strategy=s,
                        seed=seed,
                        epochs=budget,
                        name=name,
                        config=cfg,
                        every=cc.eval.every,
                    )
                )
    # Round-robin over seeds: every strategy's first seed runs before any second seed, so a
    # grid stopped early still covers every strategy.
    runs.sort(key=lambda r: r.strategy.seeds.index(r.seed))
    names = [r.name for r in runs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"two runs would share the folder runs/{dup}")
    return runs


def _validation_key(cfg: PretrainConfig) -> str:
    """The config without what validation does not look at (the seed, the output folder)."""
    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("seed", "output_dir")}
    return json.dumps(d, sort_keys=True, default=str)


def config_identity(cfg: PretrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The parts of a run config that decide its training result."""
    d = cfg.to_dict() if isinstance(cfg, PretrainConfig) else cfg
    ident = {k: d.get(k) for k in _IDENTITY_SECTIONS}
    ident["run"] = {k: (d.get("run") or {}).get(k) for k in _IDENTITY_RUN_FIELDS}
    return json.loads(json.dumps(ident, default=str))


def identity_hash(cfg: PretrainConfig | dict[str, Any]) -> str:
    blob = json.dumps(config_identity(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_existing_runs(runs: list[RunSpec]) -> None:
    """A run folder that already holds a run with another training config is an error (its
    checkpoints would silently be resumed or reused)."""
    for r in runs:
        saved = Path(r.config.run.output_dir) / "config.yaml"
        if not saved.is_file():
            continue
        try:
            old = PretrainConfig.from_dict(yaml.safe_load(saved.read_text()) or {})
        except (MimkitError, yaml.YAMLError):
            raise ConfigError(f"{saved} cannot be read; delete that run folder") from None
        if config_identity(old) != config_identity(r.config):
            a, b = config_identity(old), config_identity(r.config)
            diff = _first_difference(a, b)
            raise ConfigError(
                f"{saved.parent} was trained with another config ({diff}); delete that "
                "folder or choose another --output-dir"
            )


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for section in a:
        va, vb = a[section] or {}, b.get(section) or {}
        for key in sorted(set(va) | set(vb)):
            if va.get(key) != vb.get(key):
                return f"{section}.{key} was {va.get(key)!r}, now {vb.get(key)!r}"
    return "differs"
