"""End to end: a 1-epoch CPU run on a small subset leaves every metric and artifact in MLflow."""

import pytest
from mlflow import MlflowClient

from bench.cli import main
from bench.experiment import run
from bench.run_config import build_config

STEP = ["train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "train/d_acc_real", "train/d_acc_fake"]
EPOCH = ["eval/is", "eval/is_std", "eval/fid", "eval/d_acc_real_test", "eval/d_acc_fake_test"]
CONDITIONAL = ["eval/tarr", *[f"eval/class_acc_{i}" for i in range(10)], "eval/class_acc_geomean"]
UNCONDITIONAL = ["eval/classes_covered", "eval/class_kl"]


def artifact_paths(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


@pytest.mark.parametrize("model,extra", [("dcgan-report000", UNCONDITIONAL), ("cgan-conv", CONDITIONAL)])
def test_one_epoch_run_logs_everything(model, extra, tiny, store):
    cfg = build_config(overrides={**tiny, "model.name": model, "optim.epochs": 2})
    result = run(cfg, tracking_uri=store, experiment="e2e", progress=False)
    client = MlflowClient(store)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED"
    for key in STEP + EPOCH + extra + ["time/train_s", "time/eval_s"]:
        assert key in r.data.metrics, key
    # per-step series have several points, per-epoch series one per epoch
    assert len(client.get_metric_history(result.run_id, "train/loss_d")) >= 2
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/is")] == [1, 2]
    assert r.data.params["model/name"] == model
    assert int(r.data.params["model/g_params"]) > 0 and int(r.data.params["model/d_params"]) > 0
    assert r.data.params["techniques/real_target"] == "1.0"
    for tag in ("model_family", "techniques", "seed", "device", "dataset"):
        assert tag in r.data.tags
    files = artifact_paths(client, result.run_id)
    for f in ("config.json", "model_summary.txt", "plots/losses.png", "plots/d_accuracy.png",
              "checkpoints/generator.pt", "checkpoints/discriminator.pt"):
        assert f in files, (f, files)
    sample_images = [f for f in files if f.startswith("images/") and f.endswith(".png")]
    assert len(sample_images) == 2  # one per epoch, logged with key+step for the UI slider


def test_same_seed_same_metrics(tiny):
    cfg = build_config(overrides={**tiny, "model.name": "cgan-mlp"})
    a = run(cfg, tracking_uri=None, progress=False).metrics
    b = run(cfg, tracking_uri=None, progress=False).metrics
    a.pop("time/train_s"), a.pop("time/eval_s"), b.pop("time/train_s"), b.pop("time/eval_s")
    assert a == b


@pytest.mark.parametrize("args,field", [
    (["--model", "nope"], "nope"),
    (["--set", "optim.lr_g=-1"], "optim.lr_g"),
    (["--set", "model.d_depth=7"], "model.d_depth"),
    (["--set", "techniques.real_target=1.5"], "techniques.real_target"),
    (["--set", "techniques.smoothing=0.9"], "techniques.smoothing"),
    (["--set", "novalue"], "novalue"),
])
def test_cli_bad_input_exit_2_no_run(args, field, new_store, tmp_path, capsys):
    code = main(["train", "--tracking-uri", new_store, *args])
    assert code == 2
    assert field in capsys.readouterr().err
    assert not (tmp_path / "store").exists()  # nothing written: not even the database


def test_cli_missing_data_exit_2(tmp_path, new_store, capsys):
    code = main(["train", "--tracking-uri", new_store, "--data-root", str(tmp_path / "nowhere"),
                 "--set", "data.download=false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err
    assert not (tmp_path / "store").exists()


def test_cli_train_prints_run_and_metrics(tiny, store, capsys, data_root):
    args = ["train", "--model", "vanilla", "--tracking-uri", store, "--quiet", "--data-root", str(data_root)]
    for k, v in tiny.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "run_id:" in out and "eval/is" in out


# ---------------------------------------------------------------------------
# A group's runs: each ends once, with its own outcome


class Stop(Exception):
    """What a member's hook raises to stop it (as a pruned trial does)."""


def _group(tiny, *hooks):
    from bench.experiment import MemberRun

    small = {**tiny, "model.width": 8, "data.train_subset": 64, "eval.n_samples": 50, "eval.n_real": 50}
    return [MemberRun(build_config(overrides={**small, "seed": k}), name=f"m{k}", hooks=h) for k, h in enumerate(hooks)]


def _stop(epoch, metrics):
    raise Stop("stopped by its hook")


@pytest.mark.slow
def test_a_member_stopped_by_its_hook_ends_failed_and_the_others_finish(tiny, store):
    from bench.experiment import RunResult, run_group

    out = run_group(_group(tiny, [_stop], []), tracking_uri=store, experiment="group", progress=False,
                    log_checkpoints=False)
    assert isinstance(out[0], Stop) and isinstance(out[1], RunResult)
    runs = {r.info.run_name: r for r in MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("group").experiment_id])}
    assert runs["m0"].info.status == "FAILED" and runs["m0"].data.tags["error"] == "Stop: stopped by its hook"
    assert runs["m1"].info.status == "FINISHED"


def test_an_error_while_a_member_ends_ends_every_run_still_open(tiny, store, monkeypatch):
    """A failure logging the first member's plots leaves no run RUNNING: the members not yet ended end with it."""
    from bench import experiment

    def broken(history):
        raise OSError("disk full")

    monkeypatch.setattr(experiment, "curves_figure", broken)
    with pytest.raises(OSError, match="disk full"):
        experiment.run_group(_group(tiny, [], []), tracking_uri=store, experiment="group", progress=False,
                             log_checkpoints=False)
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("group").experiment_id])
    assert sorted((r.info.run_name, r.info.status, r.data.tags.get("error")) for r in runs) == [
        ("m0", "FAILED", "OSError: disk full"), ("m1", "FAILED", "OSError: disk full")]
