"""Two processes with the gloo backend on CPU, launched by torchrun like a real job."""

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
    sys.path.insert(0, {tests!r})
    from conftest import tiny_config
    from mimkit.ibot.pretrain import build_pretraining

    cfg = tiny_config({out!r}, **{{"run.max_steps": 3, "data.subset": 8, **{fields!r}}})
    loop = build_pretraining(cfg)
    result = vars(loop.fit())
    trainer = loop.method
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.state_dict().values()
                                if p.is_floating_point()])
    mine = torch.stack([flat(trainer.student).sum(), flat(trainer.teacher).sum(),
                        flat(trainer.student).abs().sum(), trainer.loss.center.sum()])
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    first = next(iter(loop.data.sampler))
    firsts = [None] * dist.get_world_size()
    dist.all_gather_object(firsts, first)
    if dist.get_rank() == 0:
        with open({report!r}, "w") as f:
            json.dump({{"sums": [g.tolist() for g in gathered], "result": result,
                       "world": dist.get_world_size(), "firsts": firsts}}, f)
    from mimkit.train.distributed import end_process, shutdown
    shutdown()
    end_process(0)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fields",
    # The learned scores' heads: the predictor runs in the student's forward, the policy
    # outside it (on the teacher's tokens), and DDP must average both.
    [{}, {"masking.strategies": ["mix@pred", "sample@adv"]}],
    ids=["plain", "learned-heads"],
)
def test_two_gloo_processes_keep_identical_weights(tmp_path: Path, fields):
    report = tmp_path / "report.json"
    script = tmp_path / "ddp_run.py"
    tests_dir = str(Path(__file__).parent)
    out = str(tmp_path / "out")
    script.write_text(SCRIPT.format(tests=tests_dir, out=out, report=str(report), fields=fields))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["world"] == 2
    assert data["result"]["status"] == "max_steps" and data["result"]["step"] == 3
    rank0, rank1 = data["sums"]
    assert rank0 == pytest.approx(rank1, rel=1e-6, abs=1e-6)
    # Each rank read its own shard of the data.
    assert data["firsts"][0] != data["firsts"][1]
    # Only rank 0 wrote the checkpoint and the log.
    assert (tmp_path / "out" / "checkpoint.pth").is_file()
    logs = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if r["kind"] == "step"] == [1, 2, 3]


@pytest.mark.slow
def test_cli_pretrain_under_torchrun_exits_cleanly(tmp_path: Path, make_config):
    """`torchrun ... -m mimkit pretrain` ends with code 0 on every rank: the CLI leaves the
    process group after the ranks meet (a gloo rank exiting with it alive can abort)."""
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(make_config("out", **{"run.max_steps": 2}).to_dict()))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         "-m", "mimkit", "pretrain", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max_steps at step 2" in proc.stdout
    assert proc.stdout.count("mimkit pretrain: max_steps") == 1  # rank 0 only
