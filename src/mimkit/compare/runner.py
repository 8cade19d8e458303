"""Run a compare grid: pretrain each run (see :mod:`mimkit.compare.launch`), evaluate its
kept checkpoints with k-NN (and optionally a linear probe), and record ``eval.json``.

Everything is resumable: a run whose ``eval.json`` is complete for the current settings is
skipped without building anything; an interrupted pretraining resumes from its checkpoint
(``run_pretraining`` does that); an epoch already evaluated is not evaluated again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mimkit.compare.launch import (
    CompareInterrupted,
    Nodes,
    RunFailed,
    pretrain_inprocess,
    pretrain_torchrun,
)
from mimkit.compare.spec import CompareConfig, EvalSettings, RunSpec, identity_hash
from mimkit.data import build_dataset, dataset_fingerprint, default_normalization
from mimkit.data import eval_transform as make_eval_transform
from mimkit.devices import resolve_device
from mimkit.errors import MimkitError
from mimkit.evaluate import cached_features, knn_evaluate, train_linear
from mimkit.evaluate.features import feature_cache_key
from mimkit.train.checkpoint import LATEST, epoch_checkpoint
from mimkit.train.logging import read_log
from mimkit.weights.io import load_pretrained

EVAL_FILE = "eval.json"
LAUNCHERS = ("inprocess", "torchrun")


@dataclass
class GridReport:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: str | None = None
    queued: list[str] = field(default_factory=list)  # Slurm jobs left running (--no-wait)


# -- eval.json --------------------------------------------------------------------------
def read_eval(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_eval(run_dir: str | Path, payload: dict[str, Any]) -> None:
    path = Path(run_dir) / EVAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{EVAL_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _matches(state: dict[str, Any], run: RunSpec, ev: EvalSettings) -> bool:
    return (
        state.get("config_hash") == identity_hash(run.config) and state.get("eval_key") == ev.key()
    )


def is_complete(state: dict[str, Any], run: RunSpec, ev: EvalSettings) -> bool:
    return (
        state.get("status") == "complete"
        and _matches(state, run, ev)
        and str(run.epochs) in state.get("epochs_eval", {})
    )


def run_status(run: RunSpec, ev: EvalSettings) -> str:
    """``done``, ``partial`` (some training or evaluation on disk) or ``new``."""
    if is_complete(read_eval(run.out), run, ev):
        return "done"
    if (run.out / LATEST).is_file() or (run.out / EVAL_FILE).is_file():
        return "partial"
    return "new"


# -- pretraining ------------------------------------------------------------------------
def _training_finished(run: RunSpec) -> bool:
    """The latest checkpoint holds every epoch. (Not the epoch log: a run stopped in the
    middle of an epoch logs that epoch too.)"""
    path = run.out / LATEST
    if not path.is_file():
        return False
    try:  # memory-mapped: the tensors are not read
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"]) >= run.epochs
    except Exception:  # unreadable or foreign: not finished; resuming will say what is wrong
        return False


# -- evaluation -------------------------------------------------------------------------
@dataclass
class _EvalData:
    train: Any
    val: Any
    fingerprints: dict[str, str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: Any
    num_workers: int


def _eval_data(run: RunSpec) -> _EvalData:
    cfg = run.config
    d = cfg.data
    mean, std = default_normalization(d.dataset)
    tf = make_eval_transform(cfg.model.img_size, mean, std)
    val_spec = d.val_dataset or d.dataset
    device = resolve_device(cfg.run.device)
    return _EvalData(
        train=build_dataset(d.dataset, "train", tf, subset=d.subset),
        val=build_dataset(val_spec, "val", tf),
        fingerprints={
            "train": dataset_fingerprint(d.dataset, "train", d.subset),
            "val": dataset_fingerprint(val_spec, "val", None),
        },
        mean=tuple(mean),
        std=tuple(std),
        device=device,
        num_workers=d.num_workers if device.type == "cuda" else 0,
    )


def checkpoint_for_epoch(run: RunSpec, epoch: int) -> Path | None:
    kept = run.out / epoch_checkpoint(epoch)
    if kept.is_file():
        return kept
    if epoch == run.epochs and _training_finished(run):
        return run.out / LATEST
    return None


def evaluate_checkpoint(
    run: RunSpec, ev: EvalSettings, path: Path, data: _EvalData, linear: bool
) -> dict[str, Any]:
    """k-NN (and the linear probe when ``linear``) of the checkpoint's teacher backbone."""
    model, spec, _ = load_pretrained(path, "teacher")
    model.to(data.device).eval()

    def features(split: str, mode: str):
        # The same cache key as ``mimkit knn``/``mimkit linear`` on this checkpoint.
        fingerprint = data.fingerprints[split]
        key = feature_cache_key(path, "teacher", fingerprint, spec, data.mean, data.std)
        f, labels, _ = cached_features(
            model,
            data.train if split == "train" else data.val,
            data.device,
            cache_dir=path.parent / "features",
            key_parts=key,
            batch_size=ev.batch_size,
            mode=mode,
            num_workers=data.num_workers,
            progress=False,
        )
        return f, labels

    t0 = time.perf_counter()
    (tr_f, tr_l), (va_f, va_l) = features("train", ev.features), features("val", ev.features)
    knn = knn_evaluate(
        tr_f.to(data.device),
        tr_l,
        va_f.to(data.device),
        va_l,
        ks=ev.knn_ks,
        temperature=ev.temperature,
    )
    out: dict[str, Any] = {
        "checkpoint": path.name,
        "knn": {str(k): v for k, v in knn.items()},
    }
    if linear:
        (tr_f, tr_l), (va_f, va_l) = (
            features("train", ev.linear_features),
            features("val", ev.linear_features),
        )
        res = train_linear(
            tr_f,
            tr_l,
            va_f,
            va_l,
            epochs=ev.linear_epochs,
            batch_size=ev.linear_batch_size,
            lr=ev.linear_lr,
            device=data.device,
            seed=run.seed,
            progress=False,
        )
        out["linear"] = {
            "top1": res.final.get("val_top1"),
            "top5": res.final.get("val_top5"),
            "best_top1": res.best.get("val_top1"),
            "lr": res.lr,
            "epochs": ev.linear_epochs,
        }
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def _epoch_log(run: RunSpec) -> dict[int, dict[str, Any]]:
    return {int(r["epoch"]): r for r in read_log(run.out, "epoch") if "epoch" in r}


def _mean_images_per_s(log: dict[int, dict[str, Any]], epochs: int) -> float | None:
    vals = [r["images_per_s"] for e, r in log.items() if e <= epochs and "images_per_s" in r]
    return sum(vals) / len(vals) if vals else None


def evaluate_run(
    run: RunSpec, ev: EvalSettings, state: dict[str, Any], save: Callable[[], None]
) -> None:
    """Fill ``state["epochs_eval"]`` for every evaluable epoch not yet in it."""
    done: dict[str, Any] = state.setdefault("epochs_eval", {})
    log = _epoch_log(run)
    data: _EvalData | None = None
    for epoch in run.eval_epochs:
        entry = done.get(str(epoch))
        need_linear = ev.linear and (ev.linear_every or epoch == run.epochs)
        if entry and "knn" in entry and (not need_linear or "linear" in entry):
            continue
        path = checkpoint_for_epoch(run, epoch)
        if path is None:
            if epoch == run.epochs:
                raise RunFailed(f"no checkpoint for the final epoch {epoch} in {run.out}")
            state.setdefault("missing_epochs", [])
            if epoch not in state["missing_epochs"]:
                state["missing_epochs"].append(epoch)
            continue
        if data is None:
            data = _eval_data(run)
        result = evaluate_checkpoint(run, ev, path, data, need_linear)
        rec = log.get(epoch, {})
        for key in ("loss", "images_per_s", "nmi"):
            if key in rec:
                result[key] = rec[key]
        done[str(epoch)] = result
        save()


# -- the grid ---------------------------------------------------------------------------
def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def run_one(
    run: RunSpec,
    ev: EvalSettings,
    launcher: str = "inprocess",
    nproc_per_node: int = 1,
    nodes: Nodes | None = None,
) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; return its eval.json payload."""
    old = read_eval(run.out)
    state: dict[str, Any] = {
        "run": run.name,
        "strategy": run.strategy.name,
        "slug": run.strategy.slug,
        "mask": list(run.config.masking.strategies),
        "seed": run.seed,
        "epochs": run.epochs,
        "config_hash": identity_hash(run.config),
        "eval_key": ev.key(),
        "status": "partial",
        "pretrain_seconds": 0.0,
    }
    if _matches(old, run, ev):
        state["epochs_eval"] = old.get("epochs_eval", {})
        state["pretrain_seconds"] = float(old.get("pretrain_seconds", 0.0))

    def save() -> None:
        write_eval(run.out, state)

    if not _training_finished(run):
        t0 = time.perf_counter()
        try:
            if launcher == "torchrun":
                pretrain_torchrun(run, nproc_per_node, nodes)
            else:
                pretrain_inprocess(run)
        finally:
            state["pretrain_seconds"] = round(
                state["pretrain_seconds"] + time.perf_counter() - t0, 1
            )
    log = _epoch_log(run)
    state["images_per_s"] = _mean_images_per_s(log, run.epochs)
    save()
    t0 = time.perf_counter()
    evaluate_run(run, ev, state, save)
    state["eval_seconds"] = round(time.perf_counter() - t0, 1)
    state["status"] = "complete"
    state.pop("error", None)
    save()
    return state


def _result_line(state: dict[str, Any], k: int) -> str:
    evals = state.get("epochs_eval", {})
    curve = " ".join(
        f"e{e}:{evals[e]['knn'][str(k)]['top1']:.1f}"
        for e in sorted(evals, key=int)
        if str(k) in evals[e].get("knn", {})
    )
    ips = state.get("images_per_s")
    final = evals.get(str(state["epochs"]), {})
    lin = final.get("linear", {}).get("top1")
    parts = [f"k-NN@{k} {curve}"]
    if lin is not None:
        parts.append(f"linear {lin:.1f}")
    if ips:
        parts.append(f"{ips:.0f} img/s")
    return ", ".join(parts)


def first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def record_failure(run: RunSpec, msg: str) -> None:
    failed = read_eval(run.out) or {"run": run.name, "strategy": run.strategy.name}
    failed.update(status="failed", error=msg)
    write_eval(run.out, failed)


def start_line(run: RunSpec) -> str:
    return (
        f"{run.strategy.name} seed {run.seed}, {run.epochs} epochs, mask "
        f"{' '.join(run.config.masking.strategies)}"
    )


def finish_line(state: dict[str, Any], seconds: float, k: int) -> str:
    return f"finished in {_fmt_seconds(seconds)} ({_result_line(state, k)})"


def runs_to_do(
    runs: list[RunSpec], ev: EvalSettings, report: GridReport, echo: Callable[[str], None]
) -> list[tuple[str, RunSpec]]:
    """``(tag, run)`` of every run not complete yet; the complete ones are reported skipped."""
    n = len(runs)
    width = len(str(n))
    todo = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i:>{width}}/{n}] {run.name}"
        state = read_eval(run.out)
        if is_complete(state, run, ev):
            report.skipped.append(run.name)
            echo(f"{tag}: done already, skipped ({_result_line(state, ev.shown_k)})")
        else:
            todo.append((tag, run))
    return todo


def run_grid(
    cc: CompareConfig,
    runs: list[RunSpec],
    *,
    launcher: str = "inprocess",
    nproc_per_node: int = 1,
    echo: Callable[[str], None] = print,
) -> GridReport:
    """Run every run of ``runs`` in order; a failed run is recorded and the grid goes on."""
    ev = cc.eval
    report = GridReport()
    for tag, run in runs_to_do(runs, ev, report, echo):
        echo(f"{tag}: {start_line(run)} ...")
        t0 = time.perf_counter()
        try:
            state = run_one(run, ev, launcher, nproc_per_node)
        except CompareInterrupted as err:
            report.interrupted = str(err)
            echo(f"{tag}: interrupted; rerun the same command to resume")
            break
        except KeyboardInterrupt:
            report.interrupted = f"stopped during {run.name}"
            echo(f"{tag}: interrupted; rerun the same command to resume")
            break
        except (RunFailed, MimkitError) as err:
            msg = first_line(err)
            report.failed[run.name] = msg
            record_failure(run, msg)
            echo(f"{tag}: FAILED: {msg}")
            continue
        report.trained.append(run.name)
        echo(f"{tag}: {finish_line(state, time.perf_counter() - t0, ev.shown_k)}")
    return report
