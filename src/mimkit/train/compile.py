"""Optional ``torch.compile`` of the networks' transformer blocks (``run.compile``).

Each block is compiled in place (``nn.Module.compile``): the weights, their names in
checkpoints and the mathematics stay as they are, and blocks of one shape share their
compiled graphs. The blocks hold nearly all of a step's FLOPs and see fixed shapes; the heads
stay eager, since the number of masked rows they see changes from step to step.
"""

from __future__ import annotations

from torch import nn

from mimkit.errors import ConfigError

COMPILE_OFF = "none"


def compile_backends() -> list[str]:
    """Every backend ``torch.compile`` knows here (``inductor`` generates kernels;
    ``aot_eager`` only traces, which is quick and checks that the blocks compile)."""
    import torch._dynamo  # imported only when asked for: it takes a second or two

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def check_compile_backend(backend: str) -> None:
    if backend == COMPILE_OFF:
        return
    known = compile_backends()
    if backend not in known:
        raise ConfigError(
            f"run.compile must be {COMPILE_OFF} or a torch.compile backend "
            f"({', '.join(known)}), got {backend!r}"
        )


def compile_blocks(model: nn.Module, backend: str) -> int:
    """Compile every module of every ``blocks`` list in ``model`` with ``backend``; return
    how many were compiled (none when ``backend`` is ``none``)."""
    if backend == COMPILE_OFF:
        return 0
    blocks = [
        block
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(module, nn.ModuleList)
        for block in module
    ]
    if not blocks:
        raise ConfigError(f"run.compile: {type(model).__name__} has no transformer blocks")
    for block in blocks:
        block.compile(backend=backend)
    return len(blocks)
