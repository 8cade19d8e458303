"""End to end: a 2-strategy x 2-seed grid on a tiny ViT, its outputs, and resuming."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import torch
from compare_fixtures import tiny_compare
from PIL import Image

import mimkit.compare.launch as launch
import mimkit.compare.runner as runner
import mimkit.ibot.pretrain as pretrain
from mimkit.cli import main
from mimkit.compare import build_grid, parse_compare_config
from mimkit.compare.masks_figure import IMAGES, PANEL_PX, final_runs, strategy_masks
from mimkit.ibot.mask_diagnostics import val_images
from mimkit.masking import cls_attention_scores
from mimkit.masking.diagnostics import top_k_masks
from mimkit.models import ReadoutRequest
from mimkit.models.score_heads import load_score_heads
from mimkit.viz import figure_pixels
from mimkit.weights.io import load_pretrained
from mimkit.weights.safe_load import read_torch_file


def _count_pretrainers(monkeypatch) -> list[str]:
    made: list[str] = []
    real = pretrain.build_pretraining

    def counting(cfg, *a, **kw):
        made.append(cfg.run.output_dir)
        return real(cfg, *a, **kw)

    monkeypatch.setattr(pretrain, "build_pretraining", counting)
    return made


def test_grid_outputs_then_rerun_skips(tmp_path: Path, write_compare, monkeypatch, capsys):
    cfg = write_compare(tiny_compare())
    out = tmp_path / "out"
    made = _count_pretrainers(monkeypatch)
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out)]) == 0
    assert len(made) == 4
    text = capsys.readouterr().out
    assert "[4/4] attmask-high-s1: finished" in text
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["attmask-high-s0", "attmask-high-s1", "random-s0", "random-s1"]

    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2  # runs x evaluated epochs
    assert {r["epoch"] for r in rows} == {"1", "2"}
    for r in rows:
        assert 0 <= float(r["knn_top1_k5"]) <= 100 and 0 <= float(r["knn_top1_k10"]) <= 100
        assert float(r["images_per_s"]) > 0
    finals = [r for r in rows if r["epoch"] == "2"]
    assert all(r["linear_top1"] for r in finals)

    summary = (out / "summary.md").read_text()
    assert "| Random | `random` | 2 |" in summary and " ± " in summary
    assert "AttMask-High" in summary and summary in text  # printed at the end
    with (out / "summary.csv").open() as f:
        every = list(csv.DictReader(f))
    assert sorted((r["strategy"], r["epoch"]) for r in every) == [
        ("AttMask-High", "1"), ("AttMask-High", "2"), ("Random", "1"), ("Random", "2")
    ]  # fmt: skip
    srows = {r["strategy"]: r for r in every if r["epoch"] == "2"}
    assert srows["Random"]["n_seeds"] == "2"
    seeds = [float(r["knn_top1_k10"]) for r in finals if r["strategy"] == "Random"]
    assert abs(float(srows["Random"]["knn_top1_k10_mean"]) - sum(seeds) / 2) < 1e-3
    for png in ("knn_vs_epoch.png", "final_bar.png", "final_delta.png"):  # 2 pairs: tested
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    _check_masks_figure(out, write_compare)
    ev = json.loads((out / "runs" / "random-s0" / "eval.json").read_text())
    assert ev["status"] == "complete" and set(ev["epochs_eval"]) == {"1", "2"}
    assert (out / "runs" / "random-s0" / "checkpoint_0001.pth").is_file()

    # Second run: nothing is trained or evaluated again, checkpoints are untouched.
    ckpt = out / "runs" / "random-s0" / "checkpoint.pth"
    mtime = ckpt.stat().st_mtime_ns
    made.clear()
    evaluated: list[str] = []

    real_context = runner.EvalContext  # one per checkpoint evaluated
    monkeypatch.setattr(
        runner,
        "EvalContext",
        lambda run, *a, **kw: evaluated.append(run.name) or real_context(run, *a, **kw),
    )
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out)]) == 0
    assert made == [] and evaluated == []
    assert ckpt.stat().st_mtime_ns == mtime
    assert "4 skipped" in capsys.readouterr().out

    # An evaluation interrupted after epoch 1: only epoch 2 is evaluated, nothing trained.
    path = out / "runs" / "random-s1" / "eval.json"
    ev = json.loads(path.read_text())
    del ev["epochs_eval"]["2"]
    ev["status"] = "partial"
    path.write_text(json.dumps(ev))
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out)]) == 0
    assert made == [] and evaluated == ["random-s1"]
    assert json.loads(path.read_text())["status"] == "complete"

    made.clear()
    _check_a_grid_kept_in_its_records(out, cfg, capsys)
    assert made == []


def _check_a_grid_kept_in_its_records(out: Path, cfg: Path, capsys) -> None:
    """What a grid run in parts keeps between sessions (each run's eval.json and config.yaml,
    no checkpoints) skips its runs and rewrites the same report; the masks figure, which
    needs the checkpoints, is left as it was."""
    kept = out.parent / "kept"
    for run_dir in (out / "runs").iterdir():
        (kept / "runs" / run_dir.name).mkdir(parents=True)
        for name in ("eval.json", "config.yaml"):
            shutil.copy(run_dir / name, kept / "runs" / run_dir.name / name)
    (kept / "masks.png").write_bytes(b"the earlier figure")
    capsys.readouterr()
    assert main(["compare", "--config", str(cfg), "--output-dir", str(kept)]) == 0
    assert "4 skipped" in capsys.readouterr().out
    assert (kept / "summary.md").read_text() == (out / "summary.md").read_text()
    assert (kept / "results.csv").read_text() == (out / "results.csv").read_text()
    assert (kept / "masks.png").read_bytes() == b"the earlier figure"


def test_a_record_without_its_checkpoints_is_measured_again(tmp_path: Path, write_compare):
    """A partial record whose checkpoints are gone (a grid kept as records, then asked for
    more) trains the run anew, and every epoch is measured on the new training: nothing of
    the earlier training's results is kept beside it."""
    random_only = [{"name": "Random", "mask": ["random"]}]
    cfg = write_compare(tiny_compare(seeds=[0], strategies=random_only))
    out = tmp_path / "out"
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out)]) == 0
    run_dir = out / "runs" / "random-s0"
    path = run_dir / "eval.json"
    ev = json.loads(path.read_text())
    ev["status"] = "partial"
    del ev["epochs_eval"]["2"]
    ev["epochs_eval"]["1"]["results"]["knn:cls"]["top1_k5"] = -1.0  # marks the old result
    path.write_text(json.dumps(ev))
    for ckpt in run_dir.glob("checkpoint*.pth"):
        ckpt.unlink()
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out)]) == 0
    again = json.loads(path.read_text())
    assert again["status"] == "complete" and set(again["epochs_eval"]) == {"1", "2"}
    assert again["epochs_eval"]["1"]["results"]["knn:cls"]["top1_k5"] >= 0
    assert (run_dir / "checkpoint.pth").is_file()


def test_only_dry_run_and_torchrun_launcher(tmp_path: Path, write_compare, monkeypatch, capsys):
    cfg = write_compare(tiny_compare(seeds=[0], epochs=1))
    out = tmp_path / "out"
    assert main(["compare", "--config", str(cfg), "--output-dir", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "random-s0" in text and "attmask-high-s0" in text and "new" in text
    assert not out.exists()

    calls: list[list[str]] = []

    def fake_child(cmd):  # run the pretraining the child would, in-process
        from mimkit.ibot.config import load_config

        calls.append(cmd)
        config = Path(cmd[cmd.index("--config") + 1])
        pretrain.run_pretraining(load_config(str(config)))
        return 0

    monkeypatch.setattr(launch, "run_child", fake_child)
    argv = ["compare", "--config", str(cfg), "--output-dir", str(out), "--only", "random"]
    assert main([*argv, "--launcher", "torchrun", "--nproc-per-node", "2"]) == 0
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=2" in cmd and cmd[cmd.index("-m", 3) + 1 :][:2] == [
        "mimkit",
        "pretrain",
    ]
    assert cmd[cmd.index("--config") + 1] == str(out / "runs" / "random-s0" / "config.yaml")
    assert (out / "runs" / "random-s0" / "eval.json").is_file()
    assert not (out / "runs" / "attmask-high-s0").exists()
    summary = (out / "summary.md").read_text()
    assert "| Random | `random` | 1 |" in summary and "1 of 1" not in summary
    assert "| AttMask-High | `high@raw:-1` | 0 of 1 |" in summary


def test_a_run_stopped_in_its_last_epoch_is_not_finished(tmp_path: Path):
    from mimkit.compare import build_grid, parse_compare_config
    from mimkit.ibot.config import PretrainConfig

    cc = parse_compare_config(tiny_compare(seeds=[0], epochs=1))
    run = build_grid(cc, tmp_path / "out")[0]
    partial = PretrainConfig.from_dict(run.config.to_dict())
    partial.run.max_steps = 2  # of 5: the loop still logs a (partial) epoch-1 record
    pretrain.run_pretraining(partial)
    assert not runner.training_finished(run)
    pretrain.run_pretraining(run.config)
    assert runner.training_finished(run)


def _check_masks_figure(out: Path, write_compare) -> None:
    """masks.png: 4 val images x (the image + 2 strategies); AttMask-High's panel is the
    top of its own final teacher's last-block attention."""
    with Image.open(out / "masks.png") as img:
        assert img.size == figure_pixels(IMAGES * 3, 3, PANEL_PX)
    cc = parse_compare_config(tiny_compare())
    finals = final_runs(build_grid(cc, out))
    assert [(r.name, p.name) for r, p in finals] == [
        ("random-s0", "checkpoint_0002.pth"), ("attmask-high-s0", "checkpoint_0002.pth")
    ]  # fmt: skip
    run, path = finals[1]
    images = val_images(run.config, IMAGES)
    [high] = strategy_masks(run, path, images, 0.25)
    model, _, _ = load_pretrained(path, "teacher")
    last = model.depth - 1
    with torch.no_grad():
        f = model.forward_features(images, None, ReadoutRequest(cls_layers=frozenset({last})))
    scores = cls_attention_scores(f.readout.cls_attn[last], "mean")
    assert high.title == "AttMask-High"
    assert torch.equal(high.masks.flatten(1), top_k_masks(scores, torch.full((4,), 4)))


def test_the_masks_figure_keeps_the_configs_strategy_order(tmp_path):
    # runs come seed by seed; a strategy with fewer seeds must not jump ahead of the others
    data = tiny_compare(seeds=[0, 1, 2])
    data["strategies"].append({"name": "AttMask-Low", "mask": ["low"], "seeds": [0]})
    runs = build_grid(parse_compare_config(data), tmp_path / "out")
    for run in runs:
        run.out.mkdir(parents=True)
        (run.out / runner.epoch_checkpoint(run.epochs)).touch()
    seed_major = sorted(runs, key=lambda r: r.seed)
    names = [r.strategy.name for r, _ in final_runs(seed_major)]
    assert names == ["Random", "AttMask-High", "AttMask-Low"]
    # only a strategy's first seed draws its panel: without it, the strategy is left out
    (runs[0].out / runner.epoch_checkpoint(runs[0].epochs)).unlink()
    assert runs[0].name == "random-s0"
    names = [r.strategy.name for r, _ in final_runs(seed_major)]
    assert names == ["AttMask-High", "AttMask-Low"]


def test_the_masks_figure_scores_learned_masks_with_the_runs_own_heads(tmp_path):
    """Strategies scored by a learned head (HPM's ``pred``, the adversary's ``adv``) get it
    from their run's checkpoint, and a ``mix`` follows the run's own masking.alpha: with
    alpha 0 at the end of training, HPM's final masks are the random ones of the same draw."""
    data = tiny_compare(seeds=[0], epochs=1)
    data["strategies"] = [
        {"name": "Random", "mask": ["random"]},
        {"name": "HPM", "mask": ["mix@pred"], "overrides": {"masking.alpha": [0.5, 0.0]}},
        {"name": "Adversarial", "mask": ["high@adv"]},
    ]
    runs = build_grid(parse_compare_config(data), tmp_path / "out")
    for run in runs:
        pretrain.run_pretraining(run.config)
    finals = final_runs(runs)
    images = val_images(finals[0][0].config, IMAGES)
    masks = {r.strategy.name: strategy_masks(r, p, images, 0.25)[0].masks for r, p in finals}
    grid = masks["Random"].shape[-1]
    k = round(0.25 * grid * grid)
    for name, m in masks.items():
        assert m.shape == (IMAGES, grid, grid) and m.dtype == torch.bool, name
        assert m.flatten(1).sum(1).tolist() == [k] * IMAGES, name
    assert torch.equal(masks["HPM"], masks["Random"])
    # high@adv: the top k of the policy's scores on the teacher's patch tokens
    path = finals[2][1]
    model, _, _ = load_pretrained(path, "teacher")
    [head] = load_score_heads(read_torch_file(path), ["adv"], model.embed_dim).values()
    with torch.no_grad():
        scores = head(model.forward_features(images).patches)
    assert torch.equal(masks["Adversarial"].flatten(1), top_k_masks(scores, torch.full((4,), k)))
