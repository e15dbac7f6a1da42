"""README's CPU reproduction commands run at a scale that can learn: a budget, or whole epochs of the
whole training set (a subset of one epoch left every Table 1 cell at chance)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def reproduce_commands(text: str) -> list[list[str]]:
    """Every `gan-bench reproduce ...` command in the README's code blocks and inline code."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line.split("#")[0].strip())
        else:
            lines += re.findall(r"`([^`]+)`", line)
    lines = [re.sub(r"^([A-Z_]+=\S*\s+)+", "", line) for line in lines]  # OMP_NUM_THREADS=1 gan-bench ...
    return [shlex.split(line) for line in lines
            if line.startswith("gan-bench reproduce ") and not line.startswith("gan-bench reproduce REPORT")]


def scale_problem(argv: list[str]) -> str | None:
    """Why a reproduction command would train below one full epoch of the whole set (None: it would not)."""
    if "--budget" in argv:
        return None
    if "--train-subset" in argv:
        return "trains on a subset without a --budget"
    if "--epochs" in argv and int(argv[argv.index("--epochs") + 1]) < 1:
        return "fewer than one epoch"
    return None


def test_readme_reproduction_commands_use_a_budget_or_whole_epochs():
    commands = reproduce_commands(README.read_text())
    assert any("--budget" in c for c in commands), "README shows no budget reproduction command"
    problems = [f"{' '.join(c)}: {why}" for c in commands if (why := scale_problem(c))]
    assert not problems, problems


def test_the_check_can_fail():
    text = ("```bash\nOMP_NUM_THREADS=1 gan-bench reproduce 002 --epochs 1 --train-subset 6000\n```\n"
            "`gan-bench reproduce 001`\n")
    commands = reproduce_commands(text)
    assert len(commands) == 2 and commands[0][:3] == ["gan-bench", "reproduce", "002"]
    assert scale_problem(commands[0]) == "trains on a subset without a --budget"
    assert scale_problem(commands[1]) is None
    assert scale_problem(shlex.split("gan-bench reproduce 002 --budget 2h --train-subset 6000")) is None
