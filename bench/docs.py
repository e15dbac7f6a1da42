"""The generated parts of docs/: what the registries, the config and the command line already know.

Each generated block sits in a docs page between `<!-- NAME:start -->` and `<!-- NAME:end -->`; the
text around it is written by hand. `python -m bench.docs` rewrites every block from the code;
`python -m bench.docs --check` changes nothing and exits 1 naming each block that differs (the test
suite runs the same check, so a registry, config field or option that changes without its page fails).

This is an entry point above the CLI (it reads the command line's parsers), like `bench.__main__`.
"""

from __future__ import annotations

import functools
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

DOCS = Path(__file__).resolve().parents[1] / "docs"
HELP_WIDTH = 100  # --help is wrapped to the terminal; the page is wrapped to this width everywhere


# ---------------------------------------------------------------------------
# The blocks


def commands_reference() -> str:
    """Every command's `--help`, top level first, each subcommand under its own heading."""
    from bench.cli import build_parser, command_parsers

    parts = []
    for path, parser in command_parsers(build_parser(), ["gan-bench"]):
        parser.formatter_class = functools.partial(parser.formatter_class, width=HELP_WIDTH)
        parts.append(f"### `{' '.join(path)}`\n\n```text\n{parser.format_help().rstrip()}\n```")
    return "\n\n".join(parts)


def config_reference() -> str:
    """One table per config section: key, default, accepted values, meaning (from the pydantic fields)."""
    from bench.run_config import RunConfig

    top = [(name, f) for name, f in RunConfig.model_fields.items() if not _is_section(f.annotation)]
    parts = ["#### Top level\n\n" + _field_table(top, "")]
    for name, f in RunConfig.model_fields.items():
        if _is_section(f.annotation):
            parts.append(f"#### `[{name}]`\n\n" + _field_table(list(f.annotation.model_fields.items()), name + "."))
    return "\n\n".join(parts)


def models_table() -> str:
    """The model families, from the model registry (what `gan-bench models` prints)."""
    from bench.models import MODELS

    lines = ["| `model.name` | conditional | what it is |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {'yes' if s.conditional else 'no'} | {s.description} |" for s in MODELS.values()]
    return "\n".join(lines)


def techniques_table() -> str:
    from bench import techniques

    return techniques.markdown_table()


def metrics_table() -> str:
    from bench.metrics import registry

    return registry.markdown_table()


# page -> block name -> what renders it
BLOCKS: dict[str, dict[str, Callable[[], str]]] = {
    "commands.md": {"commands": commands_reference},
    "configuration.md": {"config-table": config_reference, "models-table": models_table},
    "techniques.md": {"techniques-table": techniques_table},
    "metrics.md": {"metrics-table": metrics_table},
}


# ---------------------------------------------------------------------------
# Rendering a config field


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_table(fields: list, prefix: str) -> str:
    lines = ["| key | default | values | meaning |", "|---|---|---|---|"]
    for name, f in fields:
        default = f.default_factory() if f.default_factory is not None else f.default
        meaning = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{prefix}{name}` | {_value(default)} | {_values(f.annotation, f.metadata)} | {meaning} |")
    return "\n".join(lines)


def _value(v: object) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return f"`{v}`" if isinstance(v, str) else str(v)


_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("max_length", "at most"))


def _bounds(metadata: list) -> str:
    return ", ".join(f"{word} {_value(getattr(m, attr))}{' items' if attr == 'max_length' else ''}"
                     for m in metadata for attr, word in _BOUNDS if getattr(m, attr, None) is not None)


def _values(annotation: object, metadata: list) -> str:
    """What a key accepts, e.g. `int, >= 2, <= 4`, `batch / virtual / none`, `float, > 0 (or none)`."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _values(inner, metadata) + " (or none)"
    if origin is typing.Literal:
        return " / ".join(f"`{a}`" for a in args)
    if origin is list:
        item = args[0]
        item_meta = [m for a in typing.get_args(item)[1:] for m in getattr(a, "metadata", [a])]
        inner = typing.get_args(item)[0] if typing.get_origin(item) is typing.Annotated else item
        text = f"list of {_values(inner, item_meta)}"
        return f"{text}; {_bounds(metadata)}" if _bounds(metadata) else text
    if annotation is bool:
        return "true / false"
    name = getattr(annotation, "__name__", str(annotation))
    return f"{name}, {_bounds(metadata)}" if _bounds(metadata) else name


# ---------------------------------------------------------------------------
# Pages


def _markers(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {re.escape(name)}:start -->)\n?(.*?)\n?(<!-- {re.escape(name)}:end -->)", re.S)


def stale(docs: Path = DOCS) -> list[str]:
    """'page: block' for every generated block that is missing or differs from what the code renders."""
    found = []
    for page, blocks in BLOCKS.items():
        text = (docs / page).read_text() if (docs / page).exists() else ""
        for name, render in blocks.items():
            match = _markers(name).search(text)
            if match is None:
                found.append(f"{page}: {name} (no <!-- {name}:start --> / <!-- {name}:end --> markers)")
            elif match.group(2) != render():
                found.append(f"{page}: {name}")
    return found


def write(docs: Path = DOCS) -> list[str]:
    """Rewrite every generated block in place; the pages that changed."""
    changed = []
    for page, blocks in BLOCKS.items():
        path = docs / page
        text = old = path.read_text()
        for name, render in blocks.items():
            if not _markers(name).search(text):
                raise SystemExit(f"{path}: no <!-- {name}:start --> / <!-- {name}:end --> markers")
            body = render()
            text = _markers(name).sub(lambda m: f"{m.group(1)}\n{body}\n{m.group(3)}", text)
        if text != old:
            path.write_text(text)
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        found = stale()
        print("\n".join(f"stale: {s} (run python -m bench.docs)" for s in found) or "docs are up to date")
        return 1 if found else 0
    if argv:
        print("usage: python -m bench.docs [--check]", file=sys.stderr)
        return 2
    changed = write()
    print("rewrote " + ", ".join(f"docs/{p}" for p in changed) if changed else "docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
