"""Launch options of ``mimkit compare`` (--jobs, --launcher slurm, --baseline): bad
combinations fail in one line before anything is written; the pieces they rely on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from compare_fixtures import tiny_compare

from mimkit.cli import main
from mimkit.compare import baseline_strategy, build_grid, parse_compare_config
from mimkit.compare.pool import Slot, available_cpus, plan_slots, threads_per_run
from mimkit.compare.slurm import parse_time
from mimkit.compare.worker import RunJob
from mimkit.errors import ConfigError


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "2", "--launcher", "slurm"], "--jobs is for one machine"),
        (["--partition", "gpu"], "--partition needs --launcher slurm"),
        (["--no-wait"], "--no-wait needs --launcher slurm"),
        (["--baseline", "Nope"], "--baseline 'Nope' is not a strategy of this config"),
        (["--launcher", "slurm", "--time", "2h"], "--time '2h': give minutes"),
        (["--launcher", "slurm", "--slurm-option", "account"], "expected KEY=VALUE"),
        (["--jobs", "2", "--set", "run.device=cuda"], "needs 2 GPUs, 1 visible"),
    ],
)
def test_bad_launch_fails_before_any_folder(
    tmp_path: Path, write_compare, capsys, monkeypatch, args, message
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cfg = write_compare(tiny_compare())
    out = tmp_path / "out"
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_slurm_without_submitit_says_how_to_install(tmp_path, write_compare, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    cfg = write_compare(tiny_compare())
    out = tmp_path / "out"
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out), "--launcher", "slurm"])
    err = capsys.readouterr().err
    assert "pip install 'mimkit[cluster]'" in err and err.count("\n") == 1
    assert not out.exists()


def test_slots_split_gpus_and_threads(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7,9")
    assert plan_slots("cuda", 2, 2) == [Slot(0, ("3", "5")), Slot(1, ("7", "9"))]
    assert [s.gpus for s in plan_slots("cuda:1", 4)] == [("3",), ("5",), ("7",), ("9",)]
    assert plan_slots("cpu", 3) == [Slot(0), Slot(1), Slot(2)]
    with pytest.raises(ConfigError, match="needs 6 GPUs, 4 visible"):
        plan_slots("cuda", 3, 2)
    assert threads_per_run(None, 2) == max(1, available_cpus() // 2)
    assert threads_per_run(3, 2) == 3  # a config that pins threads wins


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("30:00", 30), ("0:30", 1), ("2:00:00", 120), ("1-0", 1440), ("1-2:30", 1590)],
)
def test_slurm_time_forms(text, minutes):
    assert parse_time(text) == minutes


def test_default_baseline_is_random_else_the_first(tmp_path):
    data = tiny_compare()
    assert baseline_strategy(parse_compare_config(data)) == "Random"
    assert baseline_strategy(parse_compare_config(data), "attmask-high") == "AttMask-High"
    data["strategies"] = data["strategies"][::-1]
    data["strategies"][1]["name"] = "Uniform"
    assert baseline_strategy(parse_compare_config(data)) == "AttMask-High"


def test_run_job_file_round_trip(tmp_path):
    data = tiny_compare()
    data["strategies"][1]["overrides"] = {"loss.lambda3": 0.5}
    data["eval"]["finetune"] = {"strategies": ["Random"], "seeds": [1]}
    data["eval"]["fewshot"] = {"shots": [2, 3]}
    cc = parse_compare_config(data)
    run = build_grid(cc, tmp_path / "out")[-1]
    job = RunJob(run, cc.eval, "torchrun", 2, threads=3, device="cuda")
    back = RunJob.from_json(job.to_json())
    assert back.run.config.to_dict() == run.config.to_dict()
    assert back.run.strategy == run.strategy and back.run.strategy.overrides == [
        ("loss.lambda3", 0.5)
    ]
    assert (back.run.name, back.run.seed, back.run.epochs, back.run.every) == (
        run.name,
        run.seed,
        run.epochs,
        run.every,
    )
    assert back.ev == cc.eval and back.ev.to_dict() == cc.eval.to_dict()
    assert (back.launcher, back.nproc_per_node, back.threads, back.device) == (
        "torchrun",
        2,
        3,
        "cuda",
    )


@pytest.mark.parametrize("status", ["stopped", "interrupted", "knn_interrupted"])
def test_a_signal_anywhere_in_pretraining_stops_the_run_rather_than_failing_it(
    tmp_path, monkeypatch, status
):
    # a signal during start-up or an epoch's k-NN ends pretraining as "interrupted": the run
    # must stay resumable (partial), never be recorded as failed
    import mimkit.ibot.pretrain as ibot_pretrain
    from mimkit.compare.launch import CompareInterrupted, RunFailed, pretrain_inprocess

    run = build_grid(parse_compare_config(tiny_compare()), tmp_path / "out")[0]
    result = ibot_pretrain.PretrainResult(status, 5, 10, run.out, True)
    monkeypatch.setattr(ibot_pretrain, "run_pretraining", lambda cfg: result)
    with pytest.raises(CompareInterrupted):
        pretrain_inprocess(run)
    result.status, result.error = "non_finite", "loss is nan"
    with pytest.raises(RunFailed, match="loss is nan"):
        pretrain_inprocess(run)
