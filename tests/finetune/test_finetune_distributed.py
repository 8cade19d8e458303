"""Fine-tuning with two gloo processes on CPU, launched by torchrun like a real job."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    sys.path.insert(0, {tests!r})
    from finetune_fixtures import tiny_finetune_config
    from mimkit.evaluate.linear import accuracy_counts, accuracy_percent
    from mimkit.finetune import build_finetuning, run_finetuning

    cfg = tiny_finetune_config({out!r}, **{{"optim.epochs": 1, "data.val_subset": 3}})
    loop = build_finetuning(cfg)
    trainer = loop.method
    fit = run_finetuning(loop)
    result = {{"status": fit.status, "step": fit.step}}
    flat = torch.cat([p.detach().flatten() for p in trainer.model.state_dict().values()])
    sums = torch.stack([flat.sum(), flat.abs().sum()])
    gathered = [torch.zeros_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    sharded = trainer.evaluate()
    trainer.model.eval()
    whole = accuracy_percent(
        accuracy_counts(trainer.model, DataLoader(trainer.data.val, batch_size=7)), 10
    )
    if dist.get_rank() == 0:
        with open({report!r}, "w") as f:
            json.dump({{"sums": [g.tolist() for g in gathered], "result": result,
                       "sharded": sharded, "whole": whole, "history": trainer.history,
                       "steps_per_epoch": loop.steps_per_epoch}}, f)
    from mimkit.train.distributed import end_process, shutdown
    shutdown()
    end_process(0)
    """
)


@pytest.mark.slow
def test_two_gloo_processes_train_one_model_and_evaluate_the_whole_val_split(tmp_path: Path):
    report = tmp_path / "report.json"
    script = tmp_path / "ddp_finetune.py"
    tests_dir = str(Path(__file__).parent)
    script.write_text(SCRIPT.format(tests=tests_dir, out=str(tmp_path / "out"), report=str(report)))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
        + [str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    # 40 train images, 8 per process and step: 2 steps per epoch.
    assert data["steps_per_epoch"] == 2 and data["result"]["status"] == "finished"
    rank0, rank1 = data["sums"]
    assert rank0 == pytest.approx(rank1, rel=1e-6, abs=1e-6)
    # Each process scored its share of the 30 val images; together they scored them all.
    assert data["sharded"] == pytest.approx(data["whole"], rel=1e-6)
    assert data["history"][0]["val_top1"] == pytest.approx(data["whole"]["top1"])
    assert (tmp_path / "out" / "checkpoint.pth").is_file()
    assert json.loads((tmp_path / "out" / "finetune.json").read_text())["world_size"] == 2
