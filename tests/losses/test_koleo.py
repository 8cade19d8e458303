import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mimkit.errors import ConfigError
from mimkit.losses import KoLeoLoss
from mimkit.train.logging import read_log


def _tiny_config():
    """tests/train/conftest.py's tiny_config, loaded by path (test folders are not packages)."""
    path = Path(__file__).resolve().parents[1] / "train" / "conftest.py"
    spec = importlib.util.spec_from_file_location("mimkit_train_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_config


def loop_reference(x: torch.Tensor) -> float:
    """The estimator written out point by point: -mean_i log(min_{j != i} |x_i - x_j|)."""
    z = F.normalize(x.double(), dim=-1)
    total = 0.0
    for i in range(z.shape[0]):
        d = min(float((z[i] - z[j]).norm()) for j in range(z.shape[0]) if j != i)
        total += math.log(d + 1e-8)
    return -total / z.shape[0]


@pytest.mark.parametrize("b,d", [(2, 3), (7, 16), (32, 128)])
def test_matches_loop_reference(b, d):
    x = torch.randn(b, d, generator=torch.Generator().manual_seed(b))
    assert KoLeoLoss()(x).item() == pytest.approx(loop_reference(x), rel=1e-5)


def test_scale_invariant_and_larger_for_crowded_points():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(16, 8, generator=g)
    crowded = spread * 0.05 + torch.ones(8)  # the same points squeezed around one direction
    loss = KoLeoLoss()
    assert loss(spread * 3).item() == pytest.approx(loss(spread).item(), rel=1e-5)
    assert loss(crowded).item() > loss(spread).item() + 1.0


def test_gradient_steps_spread_the_points():
    x = (torch.randn(16, 8, generator=torch.Generator().manual_seed(1)) * 0.1 + 1).requires_grad_()
    loss = KoLeoLoss()
    before = loss(x).item()
    for _ in range(20):
        value = loss(x)
        (grad,) = torch.autograd.grad(value, x)
        x = (x - 0.05 * grad).detach().requires_grad_()
    assert loss(x).item() < before - 0.5


def test_pretrain_logs_koleo_term(tmp_path):
    from mimkit.ibot.pretrain import run_pretraining

    cfg = _tiny_config()(tmp_path / "run", **{"loss.koleo": 0.1, "run.max_steps": 2})
    run_pretraining(cfg)
    steps = read_log(tmp_path / "run", "step")
    assert steps and all(math.isfinite(r["koleo"]) for r in steps)


def test_needs_two_images_per_batch(tmp_path):
    from mimkit.ibot.validation import validate_config

    cfg = _tiny_config()(tmp_path / "run", **{"loss.koleo": 0.1, "optim.batch_size": 1})
    with pytest.raises(ConfigError, match="KoLeo"):
        validate_config(cfg)
