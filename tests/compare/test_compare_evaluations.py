"""Every evaluation of ``eval:`` on a tiny grid, added after the fact to a finished grid:
k-NN on CLS + mean patch, low-shot k-NN, the linear probe, fine-tuning of chosen runs, and
the mask diagnostics from the checkpoints; one table and one verdict each in summary.md."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from compare_fixtures import tiny_compare

import mimkit.compare.evaluations as evaluations
import mimkit.ibot.pretrain as pretrain
from mimkit.cli import main
from mimkit.evaluate import fewshot_knn
from mimkit.evaluate.prepare import prepare_eval
from mimkit.weights.io import ModelSource

# A fine-tuning recipe that takes seconds: 40 train and 20 val images, one epoch.
TINY_RECIPE = {
    "data": {"dataset": "embedded", "subset": 4, "val_subset": 2, "num_workers": 0},
    "augment": {"randaug_ops": 0, "mixup": 0.0, "cutmix": 0.0, "crop_scale": [0.5, 1.0]},
    "optim": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0.5},
    "run": {"log_every_steps": 1},
}


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "results.csv").open() as f:
        return {r["run"]: r for r in csv.DictReader(f) if r["epoch"] == r["epochs"]}


@pytest.mark.slow
def test_evaluations_added_to_a_finished_grid(tmp_path: Path, write_compare, monkeypatch, capsys):
    out = tmp_path / "out"
    first = tiny_compare(epochs=1, eval={"knn": {"ks": [5]}, "diagnostics": False})
    argv = ["compare", "--config", str(write_compare(first)), "--output-dir", str(out)]
    assert main(argv) == 0
    before = _rows(out)
    assert "diag_hardness" not in before["random-s0"]

    recipe = tmp_path / "tiny_recipe.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE))
    every = {
        "knn": {"ks": [5], "features": ["cls", "cls+avgpool"]},
        "fewshot": {"shots": [1, 2], "draws": 3},
        "linear": {"epochs": 2},
        "finetune": {"recipe": str(recipe), "strategies": ["Random"], "seeds": [0]},
    }
    made: list[str] = []
    real_build = pretrain.build_pretraining
    monkeypatch.setattr(
        pretrain, "build_pretraining", lambda cfg, *a, **kw: made.append(1) or real_build(cfg)
    )
    knn_runs: list[int] = []
    real_knn = evaluations.knn_evaluate
    monkeypatch.setattr(
        evaluations, "knn_evaluate", lambda *a, **kw: knn_runs.append(1) or real_knn(*a, **kw)
    )
    capsys.readouterr()
    argv[2] = str(write_compare(tiny_compare(epochs=1, eval=every), "every.yaml"))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # Nothing trained again; k-NN on CLS kept, k-NN on CLS + mean patch added (4 runs).
    assert made == [] and len(knn_runs) == 4
    assert "4 runs trained/evaluated, 0 skipped" in printed

    rows = _rows(out)
    for name, row in rows.items():
        assert row["knn_top1_k5"] == before[name]["knn_top1_k5"]
        for col in ("knn_avgpool_top1_k5", "fewshot_top1_1shot", "fewshot_top1_2shot"):
            assert 0 <= float(row[col]) <= 100, (name, col)
        assert 0 <= float(row["linear_top1"]) <= 100
        # The diagnostics of runs trained without the hook, from their checkpoints.
        assert float(row["diag_hardness"]) > 0 and 0 <= float(row["diag_iou_high"]) <= 1
    assert float(rows["attmask-high-s0"]["diag_iou_high"]) == pytest.approx(1.0)
    assert [n for n, r in rows.items() if r["finetune_top1"]] == ["random-s0"]

    # Low-shot: the draws are the run's seed's, on the same cached CLS features.
    run = out / "runs" / "random-s1"
    setup = prepare_eval(ModelSource(run / "checkpoint_0001.pth"), "embedded", subset=4)
    tr = setup.features("train", "cls", "teacher", 256, False, False)
    va = setup.features("val", "cls", "teacher", 256, False, False)
    low = fewshot_knn(tr[0], tr[1], va[0], va[1], shots=[1, 2], draws=3, seed=1)
    assert float(rows["random-s1"]["fewshot_top1_2shot"]) == pytest.approx(low[2]["top1"], 1e-3)

    tuned = json.loads((out / "runs/random-s0/finetune_tiny-recipe/finetune.json").read_text())
    assert float(rows["random-s0"]["finetune_top1"]) == pytest.approx(
        tuned["last"]["val_top1"], 1e-3
    )

    summary = (out / "summary.md").read_text()
    for heading in (
        "## k-NN on CLS + mean patch token vs Random",
        "## Low-shot k-NN (CLS; 3 draws of the labelled images, averaged) vs Random",
        "### 2-shot k-NN top-1",
        "## Linear probe (last4 features, 2 epochs) vs Random",
        "## Fine-tuning (recipe",
        "## Mask diagnostics: mean [95% CI] over seeds",
    ):
        assert heading in summary, heading
    for label in ("k-NN@5 top-1 (CLS + mean patch)", "1-shot k-NN top-1", "fine-tune top-1"):
        assert f"**What this shows ({label}):**" in summary
    with (out / "summary.csv").open() as f:
        final = {r["strategy"]: r for r in csv.DictReader(f) if r["epoch"] == "1"}
    assert final["AttMask-High"]["fewshot_top1_1shot_pairs"] == "2"
    # every evaluation side by side: the mean, then the paired Δ with its interval
    glance = summary.split("## Every evaluation at a glance")[1].split("\n## ")[0]
    lines = [line.strip("|").split("|") for line in glance.splitlines() if line.startswith("| ")]
    head, cells = [c.strip() for c in lines[0]], {r[0].strip(): r for r in lines[1:]}
    assert head[2:] == ["k-NN@5", "k-NN@5 (CLS + mean patch)", "1-shot k-NN", "2-shot k-NN",
                        "linear", "fine-tune"]  # fmt: skip
    high = dict(zip(head, (c.strip() for c in cells["AttMask-High"]), strict=True))
    d = float(final["AttMask-High"]["linear_top1_diff"])
    lo, hi = (float(final["AttMask-High"][f"linear_top1_diff_ci_{s}"]) for s in ("low", "high"))
    mean = float(final["AttMask-High"]["linear_top1_mean"])
    assert high["linear"] == f"{mean:.1f} ({d:+.1f} [{lo:+.1f}, {hi:+.1f}])"
    assert high["fine-tune"] == "–"  # fine-tuned: Random seed 0 only
    assert cells["Random"][-1].strip() == f"{float(rows['random-s0']['finetune_top1']):.1f} (n=1)"
    assert math.isfinite(float(final["Random"]["diag_object_coverage_mean"]))
    assert "diag_hardness_p" not in final["Random"]  # diagnostics are estimated, not tested

    # Once more: everything is there, nothing is computed.
    knn_runs.clear()
    assert main(argv) == 0
    assert "4 skipped" in capsys.readouterr().out and knn_runs == [] and made == []
