"""`gan-bench perf gpu-check`, the figures to take on a GPU, checked by its CPU dry run (`--tiny`)."""

import json

import pytest

from bench.cli import main


def _dry_run(data_root, tmp_path, capsys, studies=None) -> tuple[dict, str]:
    out = tmp_path / "check"
    args = ["perf", "gpu-check", "--tiny", "--device", "cpu", "--data-root", str(data_root), "--threads", "1",
            "--quiet", "--out", str(out), "--set", "data.download=false"]
    assert main(args + (["--studies", str(studies)] if studies else [])) == 0
    r = json.loads((out / "gpu-check.json").read_text())
    assert r["single"]["eager"]["images_per_s"] > 0
    assert r["single"].keys() == {"eager"}  # torch.compile and CUDA graphs are for CUDA only
    for model, rows in r["groups"]["models"].items():
        assert [(row["members"], row["form"]) for row in rows] == [(2, "member_by_member"), (2, "vmap")], model
        assert all(row["speedup"] > 0 for row in rows)
    table1 = r["table1"]
    assert table1["study_s"] > 0 and table1["report_s"] > 0 and (out / "report" / "report.html").is_file()
    printed = capsys.readouterr().out
    for line in ("single report-000 DCGAN, batch 32: eager", "compiled: CUDA only", "graphed: CUDA only",
                 "group cgan-conv (report 002), width 16, K=2, vmap", "group dcgan, width 16, K=2, member by member",
                 "report 002 Table 1 (tiny)"):
        assert line in printed, line
    return table1, printed


def test_the_gpu_check_dry_run_prints_every_figure(data_root, tmp_path, capsys):
    """Table 1's own study file cut to 2 cells x 2 seeds, without its published rows (`--studies`): every part
    runs, in a fraction of the time."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "studies" / "batch-lr-grid.toml").read_text()
    cut = text.split("[published]")[0].replace("repeats = 3", "repeats = 2") \
        .replace("choices = [32, 64, 128]", "choices = [32, 128]").replace("choices = [2e-5, 2e-4, 2e-3]", "choices = [2e-4]")
    assert "choices = [32, 128]" in cut and "choices = [2e-4]" in cut and "repeats = 2" in cut  # the cuts took
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "batch-lr-grid.toml").write_text(cut)
    table1, printed = _dry_run(data_root, tmp_path, capsys, tmp_path / "studies")
    assert table1["runs_finished"] == table1["runs_planned"] == 4 and "all 4 runs finished" in printed


@pytest.mark.slow
def test_the_gpu_check_dry_run_trains_all_of_table_1(data_root, tmp_path, capsys):
    table1, printed = _dry_run(data_root, tmp_path, capsys)
    assert table1["runs_finished"] == table1["runs_planned"] == 27 and "all 27 runs finished" in printed


@pytest.mark.parametrize("argv,refused", [
    (["perf", "bench", "--tiny"], "--tiny"), (["perf", "parity", "--studies", "s"], "--studies"),
    (["perf", "gpu-check", "--steps", "3"], "--steps"), (["perf", "gpu-check", "--model", "cgan-conv"], "--model"),
    (["perf", "parity", "--ablate"], "--ablate"), (["perf", "bench", "--seeds", "2"], "--seeds")])
def test_each_action_refuses_the_options_of_the_others(argv, refused, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"unrecognized arguments: {refused}" in capsys.readouterr().err


def test_perf_asks_for_its_action(capsys):
    with pytest.raises(SystemExit) as e:
        main(["perf"])
    assert e.value.code == 2
    assert "required: ACTION" in capsys.readouterr().err


def test_the_graphed_figure_says_when_capture_fell_back():
    from bench.perf.gpu_check import format_gpu_check

    def result(tag):
        loop = {"images_per_s": 1000.0, "cuda_graph": "on"}
        return {"device": "cuda", "device_name": "a GPU", "tiny": False, "total_s": 1.0,
                "single": {"eager": loop, "compiled": loop, "graphed": {"images_per_s": 3000.0, "cuda_graph": tag}},
                "groups": {"models": {}},
                "table1": {"total_s": 1.0, "study_s": 1.0, "report_s": 0.0, "report": "r.html",
                           "runs_finished": 18, "runs_planned": 27}}

    assert "graphed 3000 images/s" in format_gpu_check(result("on"))
    assert "stopped at the deadline: 18 of 27 runs finished" in format_gpu_check(result("on"))
    assert ("graphed: fell back to eager, 3000 images/s (off: capture failed (operation not permitted))"
            in format_gpu_check(result("off: capture failed (operation not permitted)")))


def test_what_was_measured_is_saved_after_each_part(data_root):
    """A check cut off in Table 1 (device time ran out) still leaves the single-model and group figures,
    and Table 1 is told how much of the deadline is left."""
    from bench.perf.gpu_check import DEADLINE_S, run_gpu_check
    from bench.run_config import build_config

    saved, deadlines = [], []

    def table1(cfg, tiny, timeout_s):
        deadlines.append(timeout_s)
        raise TimeoutError("the device call's limit")

    cfg = build_config(overrides={"device": "cpu", "data.root": str(data_root), "data.download": False})
    try:
        run_gpu_check(cfg, table1, tiny=True, progress=False, save=lambda out: saved.append(json.dumps(out)))
    except TimeoutError:
        pass
    last = json.loads(saved[-1])
    assert len(saved) == 2 and last["single"]["eager"]["images_per_s"] > 0 and len(last["groups"]["models"]) == 2
    assert 60 <= deadlines[0] < DEADLINE_S
