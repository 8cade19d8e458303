"""Argument types shared by the sub-commands: a bad value is a one-line argparse error."""

from __future__ import annotations

import argparse
import math

from mimkit.errors import ConfigError


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
    return v


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def open_unit_float(text: str) -> float:
    """A number strictly between 0 and 1, such as a mask ratio."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return v


def unit_float(text: str) -> float:
    """A number from 0 to 1, both included, such as a point of training."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def parse_subset(text: str | None) -> float | int | None:
    """``"20"`` -> 20 per class, ``"0.2"`` or ``"20%"`` -> the first 20% of each class."""
    if text is None:
        return None
    s = str(text).strip()
    try:
        if s.endswith("%"):
            value = float(s[:-1]) / 100
            if not 0 < value <= 1:
                raise ValueError
            return value
        return float(s) if any(c in s for c in ".eE") else int(s)
    except ValueError:
        raise ConfigError(
            f"--subset {text!r}: give a count per class (20), a fraction (0.2) "
            "or a percentage (20%)"
        ) from None


def subset_arg(text: str) -> float | int:
    """argparse type for ``--subset``: :func:`parse_subset` with argparse's one-line error."""
    try:
        return parse_subset(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
