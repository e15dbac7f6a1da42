"""docs/: the generated blocks match the code they come from, and README's index reaches every page."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bench import docs
from bench.run_config import all_keys

ROOT = Path(__file__).resolve().parents[1]


def test_every_generated_block_matches_the_code():
    """Fails when a technique, metric, config field or command option changes without its page."""
    assert docs.stale() == [], "run `python -m bench.docs` and commit docs/"


def test_the_check_fails_on_a_drifted_or_missing_block_and_write_repairs_it(tmp_path):
    copy = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", copy)
    page = copy / "techniques.md"
    page.write_text(page.read_text().replace("| `ls` |", "| `label-smoothing` |", 1))
    metrics = copy / "metrics.md"
    metrics.write_text(metrics.read_text().replace("<!-- metrics-table:end -->", ""))
    found = docs.stale(copy)
    assert found[0] == "techniques.md: techniques-table"
    assert found[1].startswith("metrics.md: metrics-table (no <!-- metrics-table:start -->")
    assert len(found) == 2

    metrics.write_text((ROOT / "docs" / "metrics.md").read_text())
    assert docs.write(copy) == ["techniques.md"]
    assert docs.stale(copy) == []
    assert page.read_text() == (ROOT / "docs" / "techniques.md").read_text()  # the hand-written text kept


def test_the_commands_page_does_not_depend_on_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docs.commands_reference()
    monkeypatch.setenv("COLUMNS", "250")
    assert docs.commands_reference() == narrow
    for command in ("gan-bench train", "gan-bench study run", "gan-bench data fetch", "gan-bench analyze retrain"):
        assert f"### `{command}`\n\n```text\nusage: {command} " in narrow


def test_the_config_page_lists_every_key_with_its_bounds():
    table = docs.config_reference()
    missing = [k for k in all_keys() if f"| `{k}` |" not in table]
    assert not missing, missing
    assert "| `model.g_depth` | 3 | int, >= 2, <= 4 |" in table
    assert "| `model.g_norm` | `batch` | `batch` / `virtual` / `none` |" in table
    assert "| `optim.lr_g` | none | float, > 0, <= 1e+12 (or none) |" in table
    assert "| `train.sample_steps` | [] | list of int, >= 1; at most 100 items |" in table
    assert "| `device` | `auto` | `auto` / `cpu` / `cuda` |" in table


def test_readme_links_every_docs_page_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)(?:#[\w-]*)?\)", readme))
    assert linked == set(pages), f"README does not link {set(pages) - linked}; links a missing {linked - set(pages)}"
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target, anchor in re.findall(r"\]\(((?!https?:)[^)#\s]*)(?:#([\w-]*))?\)", page.read_text()):
            path = page.parent / target if target else page
            assert path.exists(), f"{page.name} links {target}, which does not exist"
            assert not anchor or anchor in anchors(path), f"{page.name} links {target}#{anchor}: no such heading"


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
