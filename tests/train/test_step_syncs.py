"""What a training step asks of the host: exactly one sync (the loss, the terms and the
gradient norm read together), and the heads under autocast.

No CUDA here, so the syncs are counted at the Python level: every call that would wait for
the device to answer (a tensor read into Python, a data-dependent shape) passes through a
``TorchFunctionMode`` that records it with the function that made it. The calls on the mask
plan are left out: the loader workers draw it and it stays on the host (its counts, the
crops it skips, the ranks of attention-guided masks), so reading it waits for nothing; and
so is ``masked_patches``' CPU branch (on accelerators it takes the plan's count and calls
``nonzero_static``, which needs no sync).
"""

from __future__ import annotations

import traceback
from functools import partial

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mimkit.ibot.pretrain import build_pretraining
from mimkit.train.method import Batch

# Calls that read a device tensor into Python, or whose output shape depends on its values.
READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"}
DATA_SHAPED = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive"}
HOST_ONLY = {
    "__int__ in total",  # MaskPlan.total: the sum of the plan's counts
    "__int__ in widest",  # MaskPlan.widest: their maximum
    "__bool__ in finish_crop",  # is anything masked in a crop: the plan's ranks
    "nonzero in mask_from_ranks",  # the widest rank the plan masks
    "__int__ in mask_from_ranks",
    "nonzero in masked_patches",  # the CPU branch only
}


def _bool_index(args: tuple) -> bool:
    index = args[1] if len(args) > 1 else None
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class SyncCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        repeats = name == "repeat_interleave" and "output_size" not in (kwargs or {})
        masked = name in ("__getitem__", "__setitem__") and _bool_index(args)
        if name in READS | DATA_SHAPED or repeats or masked:
            caller = traceback.extract_stack(limit=2)[0]
            self.syncs.append(f"{name} in {caller.name}")
        return func(*args, **(kwargs or {}))


STEPS = [
    {"masking.strategies": ["random"], "loss.koleo": 0.1},
    {"masking.strategies": ["block", "hint@raw:-1"], "masking.show_max": 0.5},
    {"masking.strategies": ["high@rollout"], "loss.lambda3": 1.0},
    {"masking.strategies": ["high@multi:0+2"], "masking.mask_prob": 0.5},
    {"masking.strategies": ["green", "mix:0.5@raw:-1"], "masking.mask_prob": 0.5},
    {"masking.strategies": ["mix@pred", "sample@adv"], "masking.mask_prob": 0.5},
    {"masking.strategies": ["sample:0.5@log"], "loss.adv_estimator": "reinforce"},
    {"masking.strategies": ["high@adv"], "loss.adv_estimator": "straight_through"},
]


@pytest.mark.parametrize("fields", STEPS, ids=lambda f: " ".join(f["masking.strategies"]))
def test_one_host_sync_per_step(make_config, fields):
    cfg = make_config(**fields, **{"data.num_workers": 0})
    loop = build_pretraining(cfg)
    loop.method.train()
    for step, batch in enumerate(loop.data.loader(0, 0, pin_memory=False)):
        with SyncCounter() as counter:
            loop.train_step(Batch(*batch), step)
        assert [s for s in counter.syncs if s not in HOST_ONLY] == ["tolist in train_step"]
        if step == 1:
            break
    loop.close()


def _record(dtypes: dict, key: str, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
    dtypes.setdefault(key, out.dtype)


def test_heads_run_under_autocast(make_config):
    """bf16 autocast covers the whole forward, heads and prototypes included; the loss
    terms are computed in float32."""
    cfg = make_config(**{"run.amp": "bf16", "masking.strategies": ["high"]})
    loop = build_pretraining(cfg)
    loop.method.train()
    dtypes: dict[str, torch.dtype] = {}
    for net_name in ("student", "teacher"):
        net = getattr(loop.method, net_name)
        for name, module in net.named_modules():
            if isinstance(module, nn.Linear):
                module.register_forward_hook(partial(_record, dtypes, f"{net_name}.{name}"))
    batch = next(iter(loop.data.loader(0, 0, pin_memory=False)))
    result = loop.train_step(Batch(*batch), 0)
    heads = [k for k in dtypes if ".head." in k]
    assert any(k.startswith("student.head.last_layer") for k in heads)
    assert any(k.startswith("teacher.head.last_layer") for k in heads)
    assert {dtypes[k] for k in dtypes} == {torch.bfloat16}, dtypes
    assert torch.isfinite(torch.tensor(result.values["loss"]))
    loop.close()
