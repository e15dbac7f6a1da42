"""The command line on its own: every command's help, and how a library error becomes exit code 2."""

from __future__ import annotations

import argparse

import pytest

from bench import cli
from bench.errors import BenchError, DataError, InputError


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command path, e.g. ("study", "run"), walked from the parser itself."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + (name,))
                found += _commands(sub, prefix + (name,))
    return found


COMMANDS = _commands(cli.build_parser())


def test_the_commands_users_read_about_are_there():
    top = {c[0] for c in COMMANDS}
    assert {"train", "evaluator", "models", "data", "study", "report", "reproduce", "analyze", "perf", "ui"} <= top
    assert ("study", "run") in COMMANDS and ("data", "fetch") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gan-bench {' '.join(command)}")


def _fake_command(error: Exception):
    def run(args):
        raise error
    return run


def test_a_library_error_is_one_line_and_exit_2_with_the_flag_it_blames(monkeypatch, capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train"])
    args.func = _fake_command(DataError("data.train_subset=9: too small", field="train_subset"))
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(args))
    assert cli.main(["train"]) == cli.EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    assert err == "gan-bench: error: data.train_subset=9: too small (--train-subset)\n"


def test_a_field_without_a_flag_adds_no_hint_and_any_bench_error_is_caught(monkeypatch, capsys):
    args = cli.build_parser().parse_args(["models"])
    args.func = _fake_command(InputError("run_id='x': no such run", field="run_id"))
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(args))
    assert cli.main(["models"]) == 2
    assert capsys.readouterr().err == "gan-bench: error: run_id='x': no such run\n"  # `models` has no --run
    args.func = _fake_command(BenchError("plain"))
    assert cli.main(["models"]) == 2


def test_an_unexpected_error_is_not_swallowed(monkeypatch):
    """A bug is a bug: only BenchError becomes a one-line message."""
    args = cli.build_parser().parse_args(["models"])
    args.func = _fake_command(ZeroDivisionError("bug"))
    monkeypatch.setattr(cli, "build_parser", lambda: _Fixed(args))
    with pytest.raises(ZeroDivisionError):
        cli.main(["models"])


class _Fixed:
    """A parser stand-in that returns prepared arguments."""

    def __init__(self, args):
        self.args = args

    def parse_args(self, argv):
        return self.args


@pytest.mark.parametrize("module", cli.COMMAND_MODULES)
def test_every_command_module_registers_its_commands(module):
    import importlib

    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register_cli(sub)
    registered = set(sub.choices)
    assert registered, f"{module} registers no command"
    assert registered <= {c[0] for c in COMMANDS}, f"{module}'s commands missing from gan-bench"


def test_a_command_module_that_fails_to_import_stops_the_parser(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "bench.cli.no_such_module"))
    with pytest.raises(ModuleNotFoundError, match="bench.cli.no_such_module"):
        cli.build_parser()
