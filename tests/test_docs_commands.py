"""The documentation's commands work: every ``mimkit`` command in a ```bash block of README.md,
docs/*.md and BENCHMARKS.md (and BENCHMARKS.md's inline reproducing commands) parses with
mimkit's own argument parser, and its config overrides name real fields with valid values;
the cheap ones run for real, in the order the pages give them, in a scratch folder that holds
the README's own ``photos/`` folder.

What "for real" means: pretraining and fine-tuning stop after one step (``--max-steps 1``);
``knn`` and ``linear`` read 20 train / 10 val images per class (``--subset 20 --val-subset
10``) and train the probe for one epoch; ``masks``, ``export`` and ``compare --dry-run`` run
as written. A command is only parsed when it needs what a test machine does not have: data or
weights at an absolute path (``/data/imagenet``), a launcher (``torchrun``, Slurm), a GPU, a
GPU-sized config (the ImageNet ones: ``tests/data/test_first_contact.py`` runs the README's on
a tiny ImageNet tree), a whole grid (``compare`` without ``--dry-run``: ``tests/compare``
trains tiny grids), or a file that no earlier documented command makes. One command per
sub-command (with the own-folder example and a ``--mask`` variant) runs in the quick suite;
all the runnable ones run in the slow one.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mimkit.cli import COMMANDS, build_parser, main
from mimkit.config import parse_override

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "BENCHMARKS.md"]
PAGES_WITH_INLINE_COMMANDS = (ROOT / "BENCHMARKS.md",)  # table cells that reproduce figures
LAUNCHERS = ("torchrun", "python", "python3", "srun")
OPERATORS = ("&&", "||", ";", "|")
GPU_CONFIGS = re.compile(r"^imagenet")
# The files a command reads: a missing one makes the command parse-only.
INPUT_FLAGS = ("--checkpoint", "--init", "--resume", "--images")
FOLDER_FLAGS = ("--data", "--val-data")
RUN_LIMITS = {  # what bounds a real run of each sub-command: (flag, value...) unless given
    "pretrain": [("--max-steps", "1")],
    "finetune": [("--max-steps", "1")],
    "knn": [("--subset", "20"), ("--val-subset", "10"), ("--quiet",)],
    "linear": [("--subset", "20"), ("--val-subset", "10"), ("--quiet",)],
}


@dataclass
class DocCommand:
    page: str
    line: int
    argv: list[str]  # after "mimkit"
    launcher: str = ""  # torchrun, when the line starts mimkit through it
    reads: list[str] = field(default_factory=list)  # relative files and folders it needs
    writes: list[str] = field(default_factory=list)  # files it makes that others read
    parse_only: str = ""  # why it is not run ("" when it runs)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}: mimkit {shlex.join(self.argv)}"


# -- finding the commands -------------------------------------------------------------------
def _mimkit_args(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``(launcher, args after mimkit)`` of one shell command, None when it is not mimkit's."""
    for i, token in enumerate(tokens):
        if token == "mimkit" or token.endswith("/mimkit"):
            return "", tokens[i + 1 :]
        if token == "-m" and i + 1 < len(tokens) and tokens[i + 1] == "mimkit":
            launcher = tokens[0] if tokens[0] in LAUNCHERS else ""
            return ("" if launcher.startswith("python") else launcher), tokens[i + 2 :]
    return None


def _commands_in(text: str, page: str, first_line: int) -> list[DocCommand]:
    found = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start, joined = i, lines[i]
        while joined.endswith("\\") and i + 1 < len(lines):
            i += 1
            joined = joined[:-1] + " " + lines[i]
        i += 1
        tokens = shlex.split(joined, comments=True)
        segment: list[str] = []
        for token in [*tokens, "&&"]:
            if token not in OPERATORS:
                segment.append(token)
                continue
            hit = _mimkit_args(segment) if segment else None
            if hit is not None:
                found.append(DocCommand(page, first_line + start, hit[1], hit[0]))
            segment = []
    return found


def documented_commands() -> list[DocCommand]:
    commands = []
    for path in PAGES:
        text = path.read_text()
        page = path.relative_to(ROOT).as_posix()
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
            first = text.count("\n", 0, block.start(1)) + 1
            commands += _commands_in(block.group(1), page, first)
        if path in PAGES_WITH_INLINE_COMMANDS:
            for span in re.finditer(r"`(mimkit [^`]*)`", text):
                line = text.count("\n", 0, span.start()) + 1
                commands += _commands_in(" ".join(span.group(1).split()), page, line)
    return commands


COMMANDS_IN_DOCS = documented_commands()


def _case(c: DocCommand):
    return pytest.param(c, id=c.name[:150])


# -- parsing --------------------------------------------------------------------------------
def parse(argv: list[str]):
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"mimkit's parser refuses it (exit {exc.code})") from None


def check_config(args) -> None:
    """The config the command names, with its overrides and flags: every key a real field,
    every value of the field's type and in its range. (Only the configs, not the data.)"""
    if args.command == "pretrain":
        from mimkit.commands.pretrain import collect_overrides
        from mimkit.ibot.config import load_config

        load_config(args.config, collect_overrides(args)).check_fields()
    elif args.command == "finetune":
        from mimkit.commands.config_args import config_overrides
        from mimkit.commands.finetune import FLAGS
        from mimkit.finetune import load_finetune_config

        load_finetune_config(args.config, config_overrides(args, FLAGS)).check_fields()
    elif args.command == "compare" and not args.config.endswith(".yaml"):
        from mimkit.compare import load_compare_config

        load_compare_config(args.config, [parse_override(s) for s in args.set])


@pytest.mark.parametrize("command", [_case(c) for c in COMMANDS_IN_DOCS])
def test_a_documented_command_parses(command, monkeypatch):
    monkeypatch.chdir(ROOT)  # relative config paths (benchmarks/recipes/...) are the repo's
    check_config(parse(command.argv))


def test_the_docs_show_every_sub_command():
    shown = {c.argv[0] for c in COMMANDS_IN_DOCS if c.argv}
    assert set(COMMANDS) <= shown, sorted(set(COMMANDS) - shown)
    readme = [c for c in COMMANDS_IN_DOCS if c.page == "README.md"]
    assert readme[0].argv == ["pretrain"], "the README's first command is the main command"


def documented_compare_configs() -> list[tuple[str, str]]:
    """The compare configs written out in the pages' ```yaml blocks: (page, text)."""
    found = []
    for path in PAGES:
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            if re.search(r"^strategies:", block, re.M):
                found.append((path.relative_to(ROOT).as_posix(), block))
    return found


def test_a_documented_compare_config_builds_its_grid(tmp_path):
    import yaml

    from mimkit.compare import build_grid, parse_compare_config

    configs = documented_compare_configs()
    assert configs, "docs/compare.md shows a compare config"
    for page, text in configs:
        grid = build_grid(parse_compare_config(yaml.safe_load(text), page), tmp_path)
        assert grid, page


# -- links ----------------------------------------------------------------------------------
def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_between_the_pages_lead_somewhere():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists() or (anchor and anchor not in anchors(path)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_documented_scripts_exist():
    missing = []
    for page in PAGES:
        text = page.read_text()
        for script in re.findall(r"(?:python3?|bash) (benchmarks/[\w/]+\.(?:py|sh))", text):
            if not (ROOT / script).is_file():
                missing.append(f"{page.name}: {script}")
    assert not missing, missing


# -- running --------------------------------------------------------------------------------
def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _default_output(args) -> str:
    from mimkit.ibot.config import load_config

    return load_config(args.config).run.output_dir


def plan_runs(commands: list[DocCommand]) -> list[DocCommand]:
    """Which documented commands run for real: each with what it reads and writes, in page
    order, and why the others are only parsed."""
    made = {"photos", "embedded"}  # the scratch folder's own-pictures folder; the built-in set
    planned, seen = [], set()
    for c in commands:
        if c.page == "BENCHMARKS.md" or not c.argv or c.argv[0] not in COMMANDS:
            continue  # BENCHMARKS' commands are long runs: parsed above
        if tuple(c.argv) in seen:
            continue  # shown on two pages: it ran already
        seen.add(tuple(c.argv))
        try:
            args = parse(c.argv)
        except AssertionError:
            continue  # test_a_documented_command_parses says why
        argv = c.argv
        every_value = [a.split("=", 1)[-1] for a in argv]
        if c.launcher:
            c.parse_only = f"needs {c.launcher}"
        elif any(v.startswith(("/", "$", "~")) for v in every_value):
            c.parse_only = "needs data or weights this machine does not have"
        elif any("cuda" in v for v in every_value) or _value(argv, "--launcher"):
            c.parse_only = "needs a GPU or a cluster"
        elif GPU_CONFIGS.match(getattr(args, "config", None) or ""):
            c.parse_only = "a GPU-sized config"
        elif args.command == "compare" and not args.dry_run:
            c.parse_only = "trains a whole grid, or reports on one that was trained"
        if c.parse_only:
            continue
        c.reads = [v for f in INPUT_FLAGS if (v := _value(argv, f)) and v != "random"]
        c.reads += [v for f in FOLDER_FLAGS if (v := _value(argv, f))]
        if args.command == "export":
            c.reads.append(args.checkpoint)
            c.writes.append(args.out)
        if args.command == "pretrain":
            out = args.output_dir or _default_output(args)
            c.writes.append(f"{out}/checkpoint.pth")
        missing = [r for r in c.reads if r not in made and Path(r).parts[0] not in made]
        if missing:
            c.parse_only = f"needs {missing[0]}, which no earlier command makes"
            continue
        made.update(c.writes)
        planned.append(c)
    return planned


RUNS = plan_runs(COMMANDS_IN_DOCS)


def quick_runs(runs: list[DocCommand]) -> list[DocCommand]:
    """The first of each sub-command, the first on a folder of one's own and the first with
    --mask, and whatever they read from an earlier one."""
    chosen: list[DocCommand] = []
    seen: set[str] = set()
    for c in runs:
        kinds = {c.argv[0]}
        if c.argv[0] == "pretrain" and "photos" in c.reads:
            kinds.add("own folder")
        if "--mask" in c.argv:
            kinds.add("mask")
        if kinds - seen:
            seen |= kinds
            chosen.append(c)
    needed = {r for c in chosen for r in c.reads}
    first_maker = {w: c for c in reversed(runs) for w in c.writes}
    chosen += [first_maker[r] for r in needed if r in first_maker]
    return [c for c in runs if c in chosen]


def _load_fixtures():
    spec = importlib.util.spec_from_file_location(
        "data_fixtures", Path(__file__).parent / "data" / "data_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_order(runs: list[DocCommand], folder: Path, capsys) -> None:
    _load_fixtures().image_folder(folder / "photos")
    for c in runs:
        argv = list(c.argv)
        if argv[0] == "linear" and "--epochs" in argv:
            argv[argv.index("--epochs") + 1] = "1"
        for flag, *value in RUN_LIMITS.get(argv[0], []):
            if flag not in argv:
                argv += [flag, *value]
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"{c.name} exited {code}: {err[-2000:]}"
        assert "Traceback" not in err, f"{c.name}: {err[-2000:]}"
        for path in c.writes:
            assert (folder / path).is_file(), f"{c.name} did not write {path}"


def test_the_runnable_commands_cover_every_kind_of_first_contact():
    quick = {shlex.join(c.argv) for c in quick_runs(RUNS)}
    assert "pretrain" in quick  # the main command
    assert any("--data photos" in c for c in quick)  # its own-folder example
    assert any(c.startswith("pretrain --mask") for c in quick)
    for sub in ("knn", "linear", "finetune", "masks", "export"):
        assert any(c.startswith(sub) for c in quick), sub
    assert any(c.startswith("compare") and "--dry-run" in c for c in quick)


def test_the_quick_documented_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_in_order(quick_runs(RUNS), tmp_path, capsys)


@pytest.mark.slow
def test_every_runnable_documented_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_in_order(RUNS, tmp_path, capsys)
