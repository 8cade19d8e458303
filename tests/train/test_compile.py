"""``run.compile``: the blocks compiled in place give the same training as eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.ibot.pretrain import build_pretraining, run_pretraining
from mimkit.train.logging import read_log

# aot_eager traces the blocks through dynamo and AOT autograd, as inductor does, without
# generating C++ (minutes on a 2-core CPU); inductor itself runs in benchmarks/gpu.sh.
BACKEND = "aot_eager"


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(make_config):
    fields = {"masking.strategies": ["high"], "run.max_steps": 2}
    eager = make_config("eager", **fields)
    compiled = make_config("compiled", **fields, **{"run.compile": BACKEND})
    run_pretraining(eager)
    loop = build_pretraining(compiled)
    blocks = list(loop.method.student.backbone.blocks) + list(loop.method.teacher.backbone.blocks)
    assert all(b._compiled_call_impl is not None for b in blocks)
    loop.close()
    result = run_pretraining(compiled)
    assert result.status == "max_steps"
    a = read_log(eager.run.output_dir, "step")
    b = read_log(compiled.run.output_dir, "step")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "cls", "patch", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
    # In place: the checkpoint keeps the names and values of an eager run's.
    sa = torch.load(f"{eager.run.output_dir}/checkpoint.pth", weights_only=True)["teacher"]
    sb = torch.load(f"{compiled.run.output_dir}/checkpoint.pth", weights_only=True)["teacher"]
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=1e-4, atol=1e-5)


def test_unknown_backend_is_refused_before_any_work(make_config):
    cfg = make_config(**{"run.compile": "turbo"})
    with pytest.raises(ConfigError, match="run.compile must be none or a torch.compile backend"):
        build_pretraining(cfg)
    assert not Path(cfg.run.output_dir).exists()
