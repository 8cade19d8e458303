"""The ``mimkit`` command: one thin sub-command per job (parse, build, call)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator

from mimkit import __version__
from mimkit.errors import MimkitError

# Each module in mimkit.commands provides ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS: tuple[str, ...] = (
    "pretrain",
    "finetune",
    "knn",
    "linear",
    "export",
    "masks",
    "compare",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimkit",
        description="Masked image modeling with attention-guided masks (iBOT, AttMask and more).",
    )
    parser.add_argument("--version", action="version", version=f"mimkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"mimkit.commands.{name}")
        module.add_parser(sub)
    return parser


@contextlib.contextmanager
def one_line_warnings(command: str) -> Iterator[None]:
    """Show every warning, mimkit's and its libraries' (PIL's decompression-bomb warning,
    PyTorch's), as one plain ``mimkit COMMAND: warning: ...`` line, without a source line.
    Loader workers forked while it is on inherit it."""
    with warnings.catch_warnings():

        def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            text = " ".join(str(message).split())
            print(f"mimkit {command}: warning: {text}", file=file or sys.stderr, flush=True)

        warnings.showwarning = showwarning
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    code, finished = 1, False
    try:
        with one_line_warnings(args.command):
            code = int(args.run(args) or 0)
        finished = True
    except MimkitError as err:
        # User errors are one line, no traceback.
        print(f"mimkit {args.command}: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        # Ctrl-C where a command does not handle it itself: one line, the shell's code.
        print(f"\nmimkit {args.command}: interrupted", file=sys.stderr)
        code = 130
    finally:
        # Under torchrun: leave the process group (after the other ranks when this one
        # finished normally); loaded only if the command loaded torch.distributed.
        if "torch.distributed" in sys.modules:
            from mimkit.train.distributed import end_process, shutdown

            if shutdown(meet=finished):
                end_process(code)
    return code
