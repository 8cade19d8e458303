"""Arguments shared by the commands that run from a YAML config (pretrain, finetune):
``--config``, flags that set config fields, ``--set``, ``--resume`` and ``--no-resume``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mimkit.config import parse_override

# flag -> (config path, argparse type, help); each is also settable as --set section.field=value
Flags = dict[str, tuple[str, Callable[[str], Any], str]]


def add_config_arguments(
    p: argparse.ArgumentParser, flags: Flags, default_config: str | None
) -> None:
    p.add_argument(
        "--config",
        default=default_config,
        help="YAML file, or the name of a shipped config (default: %(default)s)",
    )
    for flag, (_, kind, text) in flags.items():
        p.add_argument(flag, type=kind, help=text)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set optim.warmup_epochs=1",
    )
    p.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue from this checkpoint (default: OUTPUT_DIR/checkpoint.pth when present)",
    )
    p.add_argument(
        "--allow-changes",
        action="store_true",
        help="resume even though settings that change the computation differ from the "
        "checkpoint's (default: such a resume is refused)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse to reuse an output dir that holds a checkpoint (default: resume it)",
    )


def config_overrides(args: argparse.Namespace, flags: Flags) -> list[tuple[str, Any]]:
    """``--set`` overrides first, then the flags that were given (they win)."""
    overrides = [parse_override(text) for text in args.set]
    if getattr(args, "allow_changes", False):
        overrides.append(("run.allow_changes", True))
    for flag, (path, _, _) in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            overrides.append((path, value))
    return overrides
