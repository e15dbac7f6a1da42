"""`gan-bench perf --gpu-check`, the script a session lent a GPU runs, checked by its CPU dry run (`--tiny`)."""

import json

from bench.cli import main


def test_the_gpu_check_dry_run_prints_every_figure(data_root, tmp_path, capsys):
    out = tmp_path / "check"
    args = ["perf", "--gpu-check", "--tiny", "--device", "cpu", "--data-root", str(data_root), "--threads", "1",
            "--quiet", "--out", str(out), "--set", "data.download=false"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    r = json.loads((out / "gpu-check.json").read_text())
    assert r["single"]["eager"]["images_per_s"] > 0 and r["single"]["graphed"] is None
    assert "compiled" not in r["single"]  # torch.compile is used on CUDA only
    for model, rows in r["groups"]["models"].items():
        assert [row["members"] for row in rows] == [2, 3], model
        assert all(row["speedup"] > 0 for row in rows)
    table1 = r["table1"]
    assert table1["study_s"] > 0 and table1["report_s"] > 0 and (out / "report" / "report.html").is_file()
    for line in ("single report-000 DCGAN, batch 32: eager", "compiled: CUDA only", "graphed: not built",
                 "group cgan-conv (report 002), K=3", "report 002 Table 1 (tiny)"):
        assert line in printed, line


def test_gpu_check_flags_are_refused_elsewhere(capsys):
    assert main(["perf", "--tiny"]) == 2
    assert "--tiny=True: only read with --gpu-check" in capsys.readouterr().err
    assert main(["perf", "--gpu-check", "--parity"]) == 2
