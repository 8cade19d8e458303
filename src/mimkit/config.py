"""Configuration machinery shared by every training method: typed dataclass sections, read
from YAML, overridden field by field (``--set optim.lr=1e-3``), checked before any work.

A config is a :class:`SectionedConfig` of dataclass sections (``model``, ``data``, ...). Each
field declares what it accepts next to its default: :func:`ranged` (an interval such as
``"> 0"`` or ``"[0, 1)"``; a tuple's rule applies to each element) or :func:`choice` (one of
some strings). :meth:`SectionedConfig.check_fields` checks every field against that: one
ConfigError naming the first field that is out of range, not finite or not a choice. Fields
whose default is ``None`` are optional; ``None`` always passes for them and no other.

The methods' own configs live with them: ``mimkit.ibot.config`` (pretraining),
``mimkit.finetune.config`` (fine-tuning). :class:`RunConfig` is the section the training
engine (``mimkit.train``) reads, the same for every method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from mimkit.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on


# -- what a field accepts -----------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    text: str = "finite"

    @classmethod
    def parse(cls, text: str) -> Interval:
        """``"> 0"``, ``">= 1"``, ``"< 5"``, ``"<= 5"``, ``"[0, 1]"``, ``"(0, 1]"`` ..."""
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


FINITE = Interval()
RANGE, CHOICES = "range", "choices"  # the fields' metadata keys


def ranged(default: Any = dataclasses.MISSING, rule: str = "", **kwargs: Any) -> Any:
    """A numeric field (or tuple of numbers) that must lie in ``rule``; without a rule, it
    must still be finite."""
    meta = {RANGE: Interval.parse(rule)} if rule else {}
    return field(default=default, metadata=meta, **kwargs)


def choice(default: str | None, choices: tuple[str, ...]) -> Any:
    """A string field that must be one of ``choices``."""
    return field(default=default, metadata={CHOICES: tuple(choices)})


def field_range(section: Any, name: str) -> Interval:
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    return f.metadata.get(RANGE, FINITE)


def _is_number(x: Any) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool)


def check_field(path: str, value: Any, f: dataclasses.Field) -> None:
    """ConfigError when ``value`` is not what field ``f`` (called ``path``) accepts."""
    if value is None:
        return  # set_field refuses None for fields that are not optional
    options = f.metadata.get(CHOICES)
    if options is not None:
        if value not in options:
            raise ConfigError(f"{path} must be one of {', '.join(options)}, got {value!r}")
        return
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if not values or not all(_is_number(v) for v in values):
        return  # strings, booleans and lists of names
    rule = f.metadata.get(RANGE, FINITE)
    bad = next((v for v in values if not rule.contains(float(v))), None)
    if bad is None:
        return
    each = " each" if len(values) > 1 else ""
    if not math.isfinite(bad):
        raise ConfigError(f"{path} must{each} be a finite number, got {value}")
    verb = "lie in" if rule.text[0] in "[(" else "be"
    raise ConfigError(f"{path} must{each} {verb} {rule.text}, got {value}")


# -- the engine's section -------------------------------------------------------------------
AMP_MODES = ("auto", "bf16", "fp16", "none")


@dataclass
class RunConfig:
    """How a training run is driven (``mimkit.train``): where it writes, its seed, device,
    precision, logging and checkpoint cadence. Every method's config has one."""

    output_dir: str | None = None
    seed: int = ranged(0, ">= 0")
    device: str = "auto"
    amp: str = choice("auto", AMP_MODES)  # auto: bf16 on CUDA, none on CPU
    max_steps: int | None = ranged(None, ">= 1")
    save_every_steps: int | None = ranged(None, ">= 0")  # 0 or unset: at epoch ends only
    keep_every_epochs: int = ranged(0, ">= 0")  # also keep checkpoint_XXXX.pth (0: never)
    log_every_steps: int = ranged(10, ">= 1")
    tensorboard: bool = True
    progress: bool = True
    threads: int | None = ranged(None, ">= 1")
    init: str | None = None  # backbone weights to start from (any file mimkit knn reads)
    init_key: str = "teacher"  # which network of a two-network checkpoint to start from
    compile: str = "none"  # torch.compile backend for the transformer blocks (inductor on GPUs)
    # Resume even though settings that change the computation differ from the checkpoint's
    # (e.g. a lower learning rate after a non-finite step); off: such a resume is refused.
    allow_changes: bool = False


# -- sectioned configs ----------------------------------------------------------------------
class SectionedConfig:
    """Base of a config made of dataclass sections: a plain dict out, and back in with unknown
    sections or fields refused; every field checked against what it declares."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) so it survives YAML and weights_only loading."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        cfg = cls()
        for section, values in (data or {}).items():
            if section not in _sections(cfg):
                raise ConfigError(f"unknown config section {section!r}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping")
            for key, value in values.items():
                set_field(cfg, f"{section}.{key}", value)
        return cfg

    def check_fields(self) -> None:
        """ConfigError naming the first field out of its range or choices (in order)."""
        for section in dataclasses.fields(self):
            part = getattr(self, section.name)
            for f in dataclasses.fields(part):
                check_field(f"{section.name}.{f.name}", getattr(part, f.name), f)


def _sections(cfg: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _field_types(section: Any) -> dict[str, Any]:
    """The declared type of each field of a config section (a dataclass instance)."""
    return typing.get_type_hints(type(section))


def _describe(kind: Any) -> str:
    """What a value of type ``kind`` looks like, for messages."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is typing.Literal:
        return " or ".join(str(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if origin is list:
        return "a list of names"
    return _NAMES.get(kind, getattr(kind, "__name__", str(kind)))


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _number(value: Any) -> Any:
    """``value``, with a YAML 1.1 string such as "1e-3" read as the number it spells."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _coerce(value: Any, kind: Any, path: str) -> Any:
    """A YAML/CLI value converted to a field's declared type ``kind``; ConfigError naming the
    field when it cannot be."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{path} may not be empty: give {_describe(kind)}")
    options = args if origin in (typing.Union, types.UnionType) else (kind,)
    for option in options:
        if typing.get_origin(option) is typing.Literal and value in typing.get_args(option):
            return value
    if bool in options and isinstance(value, bool):
        return value
    if origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            numbers = [_number(v) for v in value]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                return tuple(float(v) for v in numbers)
        raise ConfigError(f"{path} must be {_describe(kind)}, got {value!r}")
    lists = [o for o in options if typing.get_origin(o) is list]
    if lists:  # names, or numbers (compare's k values and seeds)
        items = value if isinstance(value, (list, tuple)) else [value]
        item = (typing.get_args(lists[0]) or (str,))[0]
        if item is str:
            return [str(v) for v in items]
        return [_coerce(v, item, path) for v in items]
    number = _number(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if int in options and float in options:  # a count or a fraction (data.subset)
            return number
        if float in options:
            return float(number)
        if int in options and float(number).is_integer():
            return int(number)
    if str in options and not isinstance(value, (bool, list, dict)):
        return str(value)  # a folder may well be called 2024
    raise ConfigError(f"{path} must be {_describe(kind)}, got {value!r}")


def set_field(cfg: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    if len(parts) != 2:
        raise ConfigError(f"config key {path!r} must look like section.field")
    section, name = parts
    if section not in _sections(cfg):
        raise ConfigError(f"unknown config section {section!r} in {path!r}")
    obj = getattr(cfg, section)
    kinds = _field_types(obj)
    if name not in kinds:
        raise ConfigError(f"unknown config field {path!r}")
    setattr(obj, name, _coerce(value, kinds[name], path))


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip(), None
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({problem})") from None


# -- shipped configs ------------------------------------------------------------------------
SHIPPED_CONFIGS = "mimkit.configs"


def _shipped_folder(folder: str | None) -> Any:
    root = resources.files(SHIPPED_CONFIGS)
    return root / folder if folder else root


def shipped_config_names(folder: str | None = None) -> list[str]:
    """Names of the YAML configs shipped in ``mimkit/configs`` (or its sub-``folder``)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in _shipped_folder(folder).iterdir()
        if p.name.endswith(".yaml")
    )


def config_text(name_or_path: str, folder: str | None = None) -> tuple[str, str]:
    """The text of a YAML config given by path or by the name of a config shipped with mimkit
    (in ``mimkit/configs``, or its sub-``folder`` such as ``finetune`` or ``compare``), and
    where it came from."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.read_text(), str(path)
    name = f"{name_or_path.removesuffix('.yaml')}.yaml"
    shipped = _shipped_folder(folder) / name
    kind = f"{folder} config" if folder else "config"
    if not shipped.is_file():
        raise ConfigError(
            f"{kind} {name_or_path!r} is neither a file nor a shipped {kind} "
            f"({', '.join(shipped_config_names(folder)) or 'none'})"
        )
    return shipped.read_text(), "/".join(("mimkit/configs", *([folder] if folder else []), name))


def read_config_file(name_or_path: str, folder: str | None = None) -> dict[str, Any]:
    """The YAML mapping of a config given by path or shipped name (see :func:`config_text`)."""
    text, _ = config_text(name_or_path, folder)
    kind = f"{folder} config" if folder else "config"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{kind} {name_or_path!r} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} {name_or_path!r} must be a mapping")
    return data


Sectioned = TypeVar("Sectioned", bound=SectionedConfig)


def load_sections(
    cls: type[Sectioned],
    name_or_path: str | None,
    overrides: list[tuple[str, Any]] = (),
    folder: str | None = None,
) -> Sectioned:
    """A ``cls`` config from a YAML file or shipped name (None: the defaults), then the
    ``section.field`` overrides in order."""
    cfg = cls.from_dict(read_config_file(name_or_path, folder)) if name_or_path else cls()
    for key, value in overrides:
        set_field(cfg, key, value)
    return cfg
