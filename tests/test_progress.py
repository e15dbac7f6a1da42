"""Progress output: plain, periodic lines when not on a terminal; nothing when switched off."""

import io

from bench import progress


def test_a_log_gets_whole_lines_not_carriage_returns(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 3600.0)  # no refresh in between: start and end only
    out = io.StringIO()
    bar = progress.bar(total=5000, desc="train", unit="it", file=out)
    assert isinstance(bar, progress.LineBar)
    for _ in range(5000):
        bar.update()
        bar.set_postfix(loss=0.5, refresh=False)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("train:") and "5000/5000" in lines[-1], lines


def test_quiet_prints_nothing():
    out = io.StringIO()
    for _ in progress.bar(range(100), desc="x", enabled=False, file=out):
        pass
    assert out.getvalue() == ""
