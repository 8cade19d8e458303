"""``mimkit compare``: pretrain a grid of masking strategies x seeds, evaluate every kept
checkpoint, and summarise (mean, std and confidence intervals over seeds, paired tests
against a baseline strategy, thesis-style figures)."""

from mimkit.compare.aggregate import rows_from_state, summarize
from mimkit.compare.report import write_report
from mimkit.compare.runner import (
    CompareInterrupted,
    GridReport,
    read_eval,
    run_grid,
    run_one,
    run_status,
)
from mimkit.compare.spec import (
    CompareConfig,
    EvalSettings,
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
    "CompareConfig",
    "CompareInterrupted",
    "EvalSettings",
    "GridReport",
    "RunSpec",
    "Strategy",
    "baseline_strategy",
    "build_grid",
    "check_existing_runs",
    "load_compare_config",
    "parse_compare_config",
    "read_compare_file_text",
    "read_eval",
    "rows_from_state",
    "run_grid",
    "run_one",
    "run_status",
    "shipped_compare_names",
    "summarize",
    "write_report",
]
