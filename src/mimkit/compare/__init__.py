"""``mimkit compare``: pretrain a grid of masking strategies x seeds, evaluate every kept
checkpoint (k-NN, low-shot k-NN, linear probe, fine-tuning, mask diagnostics), and
summarise (mean, std and confidence intervals over seeds, paired tests against a baseline
strategy, thesis-style figures)."""

from mimkit.compare.aggregate import rows_from_record, summarize
from mimkit.compare.evaluations import Evaluation, Metric, evaluation_plan
from mimkit.compare.executors import EXECUTORS, Executor, LaunchOptions, plan_executor
from mimkit.compare.launch import CompareInterrupted
from mimkit.compare.record import EpochRecord, RunRecord, read_record
from mimkit.compare.report import write_report
from mimkit.compare.runner import GridReport, run_one, run_status
from mimkit.compare.settings import EvalSettings
from mimkit.compare.spec import (
    CompareConfig,
    RunSpec,
    Strategy,
    baseline_strategy,
    build_grid,
    check_existing_runs,
    load_compare_config,
    parse_compare_config,
    read_compare_file_text,
    shipped_compare_names,
)

__all__ = [
    "EXECUTORS",
    "CompareConfig",
    "CompareInterrupted",
    "EpochRecord",
    "EvalSettings",
    "Evaluation",
    "Executor",
    "GridReport",
    "LaunchOptions",
    "Metric",
    "RunRecord",
    "RunSpec",
    "Strategy",
    "baseline_strategy",
    "build_grid",
    "check_existing_runs",
    "evaluation_plan",
    "load_compare_config",
    "parse_compare_config",
    "plan_executor",
    "read_compare_file_text",
    "read_record",
    "rows_from_record",
    "run_one",
    "run_status",
    "shipped_compare_names",
    "summarize",
    "write_report",
]
