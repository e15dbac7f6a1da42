"""A command's threads and OpenMP wait policy from the cores it may use and the other processes' load."""

import os

import pytest
import torch

from bench import threads
from bench.threads import choose


@pytest.mark.parametrize("cores,load,machine,want", [
    (2, 0.1, 2, 2),  # idle: every core
    (2, 0.4, 2, 2),  # under half a core busy: still every core
    (2, 0.6, 2, 1),  # one core busy
    (2, 2.1, 2, 1),  # both busy: one thread, never none
    (2, 13.8, 2, 1),
    (8, 3.4, 8, 5),  # one thread per core the others leave free
    (2, 8.0, 64, 2),  # a load spread over 64 cores barely touches this process's 2
    (1, 0.0, 1, 1),
])
def test_one_thread_per_core_the_others_leave_free(cores, load, machine, want):
    assert choose(cores, load, machine).threads == want


def test_passive_wait_only_on_a_busy_machine():
    assert choose(2, 0.3).wait_policy is None
    assert choose(2, 0.6).wait_policy == "PASSIVE"
    assert choose(4, 9.0).wait_policy == "PASSIVE"


def test_the_users_settings_win():
    assert choose(2, 5.0, user_threads="2").threads is None  # torch's count, from the user's OMP_NUM_THREADS
    assert choose(2, 5.0, user_threads="2").wait_policy == "PASSIVE"  # the wait policy is still unset
    assert choose(2, 5.0, user_wait="ACTIVE").wait_policy is None
    assert choose(2, 5.0, user_wait="ACTIVE").threads == 1


def test_the_note_says_the_choice_only_when_it_differs_from_torchs_default():
    busy = choose(2, 2.1)
    assert busy.note(1, 2) == "threads: 1 of 2 cores (load 2.1 from other processes); OpenMP passive wait"
    assert busy.note(2, 2) == "OpenMP passive wait (load 2.1 from other processes)"  # the user's threads
    assert choose(2, 0.1).note(2, 2) == ""
    assert choose(1, 0.0).note(1, 1) == ""


@pytest.fixture
def fresh(monkeypatch):
    """The module's per-process decision undone, torch's thread count restored after the test."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_CHOICE", None)
    monkeypatch.setattr(threads, "_NOTE", "")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


def test_the_environment_gets_passive_wait_on_a_busy_machine_unless_the_user_set_one(fresh):
    fresh.setattr(threads, "machine_load", lambda: 1000.0)  # busy however many cores
    threads.prepare_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    fresh.setattr(threads, "_CHOICE", None)
    fresh.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads.prepare_environment().wait_policy is None and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_command_trains_with_the_chosen_threads_then_restores_them(fresh, capsys):
    torch.set_num_threads(2)
    fresh.setattr(threads, "_CHOICE", choose(2, 2.1))
    with threads.for_command():
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # spawned workers inherit it
        assert threads.per_worker(1) == 1
        threads.announce()
        threads.announce()  # said once
    assert torch.get_num_threads() == 2 and "OMP_NUM_THREADS" not in os.environ
    err = capsys.readouterr().err
    assert err == "threads: 1 of 2 cores (load 2.1 from other processes); OpenMP passive wait\n"


def test_a_command_never_takes_more_threads_than_torchs_own(fresh, capsys):
    torch.set_num_threads(1)
    fresh.setattr(threads, "_CHOICE", choose(4, 0.0))
    with threads.for_command():
        assert torch.get_num_threads() == 1
        threads.announce()
    assert capsys.readouterr().err == ""


def test_workers_split_the_commands_threads(fresh):
    torch.set_num_threads(4)
    assert [threads.per_worker(w) for w in (1, 2, 3, 8)] == [4, 2, 1, 1]


def test_the_cli_applies_the_choice_for_the_command_only(fresh, capsys):
    from bench import cli

    seen = []
    fresh.setattr(cli, "cmd_models", lambda args: seen.append(torch.get_num_threads()) or 0)
    torch.set_num_threads(2)
    fresh.setattr(threads, "_CHOICE", choose(2, 2.1))
    assert cli.main(["models"]) == 0
    assert seen == [1] and torch.get_num_threads() == 2
    assert capsys.readouterr().err == ""  # said when training starts, not by a command that trains nothing


def test_the_load_is_what_the_cores_do_now_where_the_minute_average_says_busy(monkeypatch, tmp_path):
    """The 1-minute average lags: a job that just ended still reads busy. /proc/stat's busy time says what is."""
    stat = tmp_path / "stat"
    samples = iter([(100, 1000), (100 + 75, 1000 + 100)])  # 75 of 100 jiffies busy across the machine
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert threads.busy_cores(0.0, read=lambda: next(samples)) == pytest.approx(1.5)
    assert threads.busy_cores(0.0, read=lambda: None) is None
    stat.write_text("cpu  10 0 20 300 5 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert threads._cpu_times(str(stat)) == (30, 335)
    assert threads._cpu_times(str(tmp_path / "none")) is None

    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 2.0, 1.0))
    monkeypatch.setattr(threads, "busy_cores", lambda window_s: 0.1)
    assert threads.machine_load() == 0.1  # busy a minute ago, idle now
    monkeypatch.setattr(threads, "busy_cores", lambda window_s: None)
    assert threads.machine_load() == 3.0  # no /proc/stat: the average
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    monkeypatch.setattr(threads, "busy_cores", lambda window_s: pytest.fail("sampled an idle machine"))
    assert threads.machine_load() == 0.2
