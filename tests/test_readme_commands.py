"""The commands README and docs/ show: the quick start and the test command as CI runs them, every
`gan-bench ...` line accepted by the command line's parser, and reproduction commands at a scale that
can learn (a budget, or whole epochs of the whole training set: a subset of one epoch left every
Table 1 cell at chance)."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from pathlib import Path

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def code_lines(text: str) -> tuple[list[str], list[str]]:
    """(lines of fenced code blocks, comments dropped and `\\` continuations joined; inline code spans,
    also those that wrap across lines)."""
    fenced_lines, prose, fenced, pending = [], [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            code = pending + line.split(" #")[0].strip()
            pending = code[:-1] + " " if code.endswith("\\") else ""
            if not pending:
                fenced_lines.append(code)
        else:
            prose.append(line)
    inline = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", "\n".join(prose))]
    return fenced_lines, inline


def gan_bench_commands(lines: list[str]) -> list[str]:
    """The `gan-bench ...` commands among code lines, without leading VAR=value assignments."""
    lines = [re.sub(r"^([A-Z_]+=\S*\s+)+", "", line) for line in lines]
    return [line for line in lines if line.startswith("gan-bench ")]


def is_template(command: str) -> bool:
    """A usage pattern rather than a command: `gan-bench report STUDY [STUDY ...]`, `gan-bench analyze NAME`."""
    return "[" in command or "..." in command or bool(re.match(r"gan-bench( [a-z][a-z-]*)* [A-Z]{2,}", command))


# Inline code names a command or a flag in prose ("`gan-bench report` writes ..."): what it leaves out is
# fine, what it names must exist.
LEFT_OUT = re.compile(r"arguments are required|one of the arguments .* is required|invalid \w+ value")


@functools.cache
def parser():
    return build_parser()  # parsing leaves it as it was, so one serves every command


def parse_error(command: str) -> str | None:
    """The parser's complaint about a command (None: it parses)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser().parse_args(shlex.split(command)[1:])
    except SystemExit as e:
        if e.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def test_quick_start_is_the_install_then_one_training():
    text = README.read_text()
    first_section = re.search(r"^## (.+)$", text, re.M)
    assert first_section and first_section.group(1) == "Quick start", "README's first section is not Quick start"
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert first_block == ["pip install -e '.[dev]'", "gan-bench train"]


def test_readme_shows_the_test_command_ci_runs():
    fenced, _ = code_lines(README.read_text())
    command = [c for c in fenced if c.startswith("python -m pytest -q")]
    assert command, "README shows no `python -m pytest -q ...` command"
    assert command[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def command_problems(text: str) -> list[str]:
    """Fenced commands the parser refuses; inline ones that name a command or flag it does not have."""
    fenced, inline = code_lines(text)
    problems = [f"{c}: {why}" for c in gan_bench_commands(fenced) if not is_template(c) and (why := parse_error(c))]
    return problems + [f"{c}: {why}" for c in gan_bench_commands(inline)
                       if not is_template(c) and (why := parse_error(c)) and not LEFT_OUT.search(why)]


def test_every_command_shown_parses():
    problems = [f"{page.name}: {problem}" for page in PAGES for problem in command_problems(page.read_text())]
    assert not problems, "\n".join(problems)


def reproduce_commands(text: str) -> list[list[str]]:
    """Every `gan-bench reproduce ...` command in code blocks and inline code."""
    return [shlex.split(line) for line in gan_bench_commands(sum(code_lines(text), []))
            if line.startswith("gan-bench reproduce ") and not is_template(line)]


def scale_problem(argv: list[str]) -> str | None:
    """Why a reproduction command would train below one full epoch of the whole set (None: it would not)."""
    if "--budget" in argv:
        return None
    if "--train-subset" in argv:
        return "trains on a subset without a --budget"
    if "--epochs" in argv and int(argv[argv.index("--epochs") + 1]) < 1:
        return "fewer than one epoch"
    return None


def test_reproduction_commands_use_a_budget_or_whole_epochs():
    commands = [c for page in PAGES for c in reproduce_commands(page.read_text())]
    assert any("--budget" in c for c in reproduce_commands(README.read_text())), "README shows no budget command"
    problems = [f"{' '.join(c)}: {why}" for c in commands if (why := scale_problem(c))]
    assert not problems, problems


def test_the_checks_can_fail():
    text = ("```bash\nOMP_NUM_THREADS=1 gan-bench reproduce 002 --epochs 1 \\\n  --train-subset 6000  # comment\n```\n"
            "`gan-bench reproduce 001` and `gan-bench report STUDY [STUDY ...]`\n")
    commands = reproduce_commands(text)
    assert len(commands) == 2 and commands[0][:3] == ["gan-bench", "reproduce", "002"]
    assert scale_problem(commands[0]) == "trains on a subset without a --budget"
    assert scale_problem(commands[1]) is None
    assert scale_problem(shlex.split("gan-bench reproduce 002 --budget 2h --train-subset 6000")) is None
    assert is_template("gan-bench report STUDY [STUDY ...]") and not is_template("gan-bench report smoke")
    assert "--no-such-flag" in parse_error("gan-bench train --no-such-flag")
    assert "invalid choice" in parse_error("gan-bench trian")
    assert parse_error("gan-bench train --epochs 2 --set optim.lr=1e-3") is None
    page = ("```bash\ngan-bench report\ngan-bench study run studies/smoke.toml \\\n  --epochs 1\n```\n"
            "Then `gan-bench report` and `gan-bench perf bench\n--no-such-mode`.\n")
    problems = command_problems(page)
    assert len(problems) == 2 and problems[0].startswith("gan-bench report: ") and "required" in problems[0]
    assert problems[1].startswith("gan-bench perf bench --no-such-mode: ")
