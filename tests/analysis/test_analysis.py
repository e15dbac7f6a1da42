"""Analyses of finished runs: the maths on synthetic data, then every analysis end to end on tiny runs.

Two tiny runs (a conditional `cgan-mlp`, an unconditional `vanilla`) are trained once per module;
each analysis runs through the CLI and must log its figures, tables and metrics back to the run.
"""

import json
import math

import matplotlib
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from bench.analysis import common, discriminator, features, latent, retrain
from bench.cli import main
from bench.errors import InputError
from bench.run_config import build_config
from bench.experiment import run as train_run
from bench.step import build_gan
from bench.tracking import TAG_ROLE, TAG_STUDY, TAG_TRIAL


LATENT = ["--n-pool", "200", "--noise-samples", "3", "--n-ood", "30", "--interp-steps", "4", "--n-random", "2",
          "--style-columns", "3"]
RETRAIN = ["--real-size", "100", "--epochs", "1", "--finetune-epochs", "1", "--min-steps", "0", "--batch-size", "50",
           "--few-per-class", "2", "--few-generated", "50", "--max-draws", "1", "--n-test", "100", "--curve-epochs", "2"]


@pytest.fixture(scope="module")
def runs(data_root, tiny, tmp_path_factory):
    """{"store": uri, "cgan-mlp": run id, "vanilla": run id}: tiny runs with checkpoints."""
    store = f"sqlite:///{tmp_path_factory.mktemp('analysis') / 'store' / 'mlflow.db'}"
    out = {"store": store, "data_root": str(data_root)}
    for model in ("cgan-mlp", "vanilla"):
        cfg = build_config(overrides={**tiny, "model.name": model})
        out[model] = train_run(cfg, tracking_uri=store, experiment="analysis", progress=False).run_id
    return out


@pytest.fixture(scope="module")
def cgan(runs):
    return common.load_run(runs["cgan-mlp"], runs["store"], device="cpu", progress=False)


def cli(runs, analysis, model, *extra):
    return main(["analyze", analysis, "--run", runs[model], "--tracking-uri", runs["store"],
                 "--device", "cpu", "--quiet", *extra])


def artifacts(client, run_id, path):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifacts(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def read_json(store, run_id, path, tmp_path):
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(tmp_path),
                                                tracking_uri=store)
    with open(local) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# The maths


def clusters(num_classes=4, per_class=50, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = 10 * torch.randn(num_classes, dim, generator=gen)
    labels = torch.arange(num_classes).repeat(per_class)[torch.randperm(num_classes * per_class, generator=gen)]
    vectors = centers[labels] + 0.5 * torch.randn(len(labels), dim, generator=gen)
    return vectors, labels, centers


def test_minimum_distance_classifier_is_exact_on_clusters():
    vectors, labels, centers = clusters()
    means, counts = latent.class_means(vectors, labels, 4)
    assert counts.tolist() == [50] * 4
    assert torch.allclose(means.float(), centers, atol=0.3)
    assert torch.equal(latent.nearest_mean(vectors, means), labels)
    rows = latent.mdm_agreement(vectors, labels, torch.ones(len(labels)), 4, thresholds=(0.0, 0.9))
    assert [r["agreement"] for r in rows] == [1.0, 1.0]
    assert all(r["n_fit"] + r["n_eval"] == 200 and r["chance"] < 0.5 for r in rows)


def test_minimum_distance_classifier_ignores_absent_classes():
    vectors, labels, _ = clusters()
    keep = labels != 2  # class 2 has no vector: its mean is NaN and must never be chosen
    means, counts = latent.class_means(vectors[keep], labels[keep], 4)
    assert counts[2] == 0 and means[2].isnan().all()
    pred = latent.nearest_mean(vectors, means)
    assert not (pred == 2).any()
    assert torch.equal(pred[keep], labels[keep])


def test_mdm_agreement_below_threshold_is_nan():
    vectors, labels, _ = clusters()
    rows = latent.mdm_agreement(vectors, labels, torch.full((len(labels),), 0.5), 4, thresholds=(0.9,))
    assert rows[0]["n_eval"] == 0 and math.isnan(rows[0]["agreement"])


def test_interpolate_has_exact_endpoints():
    a, b = torch.randn(100), torch.randn(100)
    path = latent.interpolate(a, b, 7)
    assert path.shape == (7, 100)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.allclose(path[3], (a + b) / 2, atol=1e-6)


def test_discriminator_class_table_counts():
    real_labels = torch.tensor([0, 0, 1, 1])
    real_logits = torch.tensor([2.0, -1.0, 3.0, 1.0])   # class 0: one real called fake
    fake_labels = torch.tensor([0, 0, 1, 1])
    fake_logits = torch.tensor([-2.0, -1.0, 0.5, 4.0])  # class 1: both fakes called real
    rows = discriminator.class_table(real_logits, real_labels, fake_logits, fake_labels, 2)
    assert [r["class"] for r in rows] == [0, 1, "all"]
    r0, r1, total = rows
    assert (r0["acc_real"], r0["acc_fake"], r0["false_negatives"], r0["false_positives"]) == (0.5, 1.0, 1, 0)
    assert (r1["acc_real"], r1["acc_fake"], r1["false_negatives"], r1["false_positives"]) == (1.0, 0.0, 0, 2)
    assert total["acc"] == 5 / 8 and total["fp_rate"] == 0.5 and total["fn_rate"] == 0.25


def test_retrain_budget_rules():
    assert retrain.epochs_for(60_000, 128, 5, 500) == 5
    assert retrain.epochs_for(550, 128, 5, 500) == 125  # 4 steps an epoch
    assert retrain.epochs_for(30, 128, 1, 0) == 1
    x = torch.tensor([[[[-1.0, 0.0, 1.0]]]])
    assert retrain.to_uint8(x).tolist() == [[[0, 128, 255]]]
    assert len(retrain.row_names()) == len(set(retrain.row_names())) == 22
    assert "mix/gen30" in retrain.row_names() and "add/gen30" in retrain.row_names()
    # a fine-tuning group brings the classifier it starts from, and nothing else
    assert retrain.row_names(("real_then_gen",)) == ["mix/gen0", "real_then_gen/ft50", "real_then_gen/ft100"]
    assert retrain.row_names(("few",))[:2] == ["mix/gen100", "few/real"]
    assert retrain.row_names(("curves",)) == []


@pytest.mark.parametrize("model,norm", [("cgan-mlp", "batch"), ("cgan-conv", "batch"), ("cgan-mlp", "virtual")])
def test_generator_fed_embeddings_matches_labels(model, norm):
    cfg = build_config(overrides={"model.name": model, "model.g_norm": norm, "model.width": 8, "model.hidden": 16,
                                  "model.vbn_ref_size": 4})
    G = build_gan(cfg).generator.eval()
    z, y = torch.randn(6, cfg.model.latent_dim), torch.tensor([0, 1, 2, 7, 8, 9])
    if norm == "virtual":
        G.set_reference(torch.randn(4, cfg.model.latent_dim), torch.tensor([0, 1, 2, 3]))
    with torch.no_grad():
        expected = G(z, y)
    table = common.embedding_table(G)
    assert table.shape == (10, cfg.model.embed_dim)
    assert torch.allclose(common.generate_from_embedding(G, z, table[y]), expected, atol=1e-6)
    assert common.embedding_generator(build_gan(build_config(overrides={"model.name": "vanilla"})).generator) is None


# ---------------------------------------------------------------------------
# On a trained conditional run


def test_interpolation_endpoints_reproduce_endpoint_images(cgan):
    G = cgan.gan.generator
    gen = torch.Generator().manual_seed(1)
    za, zb = torch.randn(2, cgan.latent_dim, generator=gen)
    images = latent.interpolation_images(G, za, zb, 5, label=3)
    ends = common.generate(G, torch.stack([za, zb]), torch.tensor([3, 3]))
    assert torch.allclose(images[0], ends[0], atol=1e-5) and torch.allclose(images[-1], ends[1], atol=1e-5)
    assert not torch.allclose(images[2], ends[0], atol=1e-3)  # the middle is neither endpoint
    table = common.embedding_table(G)
    joint = latent.interpolation_images(G, za, zb, 5, ea=table[2], eb=table[7])
    ends = common.generate(G, torch.stack([za, zb]), torch.tensor([2, 7]))
    assert torch.allclose(joint[0], ends[0], atol=1e-5) and torch.allclose(joint[-1], ends[1], atol=1e-5)


def test_latent_analysis_is_reproducible(cgan):
    opts = latent.Options(n_pool=200, noise_samples=2, n_ood=20, interp_steps=3, n_random=1)
    a = latent.analyze(cgan, opts, progress=False)
    b = latent.analyze(cgan, opts, progress=False)
    same = lambda x, y: x == y or (math.isnan(x) and math.isnan(y))  # noqa: E731
    assert a.metrics.keys() == b.metrics.keys() and all(same(a.metrics[k], b.metrics[k]) for k in a.metrics)
    assert a.tables["ood"] == b.tables["ood"] and a.tables["noise"] == b.tables["noise"]
    other = latent.sample_pool(cgan, 200, torch.Generator().manual_seed(1), progress=False)
    assert other["z"].norm(dim=1).double().mean().item() != a.metrics["norm_random"]  # the seed matters


def test_latent_end_to_end(runs, tmp_path, capsys):
    assert cli(runs, "latent", "cgan-mlp", *LATENT) == 0
    assert "analysis/latent/norm_random" in capsys.readouterr().out
    client, run_id = MlflowClient(runs["store"]), runs["cgan-mlp"]
    files = artifacts(client, run_id, "analysis/latent")
    for name in ("class_means.png", "class_means.json", "class_means.csv", "mdm_agreement.json", "mdm_agreement.csv",
                 "interpolation.json", "noise.json", "noise.csv", "noise_latent.png", "noise_embedding.png",
                 "noise_latent_curves.png", "ood.json", "ood_embeddings.png", "summary.json"):
        assert f"analysis/latent/{name}" in files, (name, files)
    metrics = client.get_run(run_id).data.metrics
    assert abs(metrics["analysis/latent/norm_random"] - 10.0) < 0.5  # ||z|| ~ sqrt(100) for z ~ N(0, I)
    assert 0.0 <= metrics["analysis/latent/ood_agreement"] <= 1.0
    assert "analysis/latent/noise_embedding_label_rate_s2.0" in metrics
    rows = read_json(runs["store"], run_id, "analysis/latent/class_means.json", tmp_path)
    assert [r["class"] for r in rows] == list(range(10))
    noise_rows = read_json(runs["store"], run_id, "analysis/latent/noise.json", tmp_path)
    assert {(r["space"], r["sigma"]) for r in noise_rows} == {(s, g) for s in ("latent", "embedding")
                                                              for g in latent.SIGMAS}
    summary = read_json(runs["store"], run_id, "analysis/latent/summary.json", tmp_path)
    assert summary["options"]["n_pool"] == 200 and summary["options"]["seed"] == 0
    uniform = read_json(runs["store"], run_id, "analysis/latent/noise_uniform.json", tmp_path)
    assert {r["amplitude"] for r in uniform} == set(latent.UNIFORM_AMPLITUDES)
    assert "analysis/latent/noise_latent_uniform_label_rate_a0.9" in metrics
    assert "analysis/latent/z_style.png" in files and 0.0 <= metrics["analysis/latent/z_style_label_rate"] <= 1.0


def test_discriminator_end_to_end(runs, tmp_path):
    assert cli(runs, "discriminator", "cgan-mlp", "--n", "20") == 0
    client, run_id = MlflowClient(runs["store"]), runs["cgan-mlp"]
    files = artifacts(client, run_id, "analysis/discriminator")
    for name in ("per_class.png", "per_class.json", "per_class.csv", "verdicts.png", "verdicts.json", "summary.json"):
        assert f"analysis/discriminator/{name}" in files, (name, files)
    rows = read_json(runs["store"], run_id, "analysis/discriminator/per_class.json", tmp_path)
    assert [r["class"] for r in rows] == [*range(10), "all"]
    assert all(r["n_real"] == 20 and r["n_fake"] == 20 for r in rows[:-1])
    metrics = client.get_run(run_id).data.metrics
    for key in ("acc", "acc_real", "acc_fake", "fp_rate", "fn_rate", "acc_real_0", "acc_fake_9"):
        assert 0.0 <= metrics[f"analysis/discriminator/{key}"] <= 1.0
    assert metrics["analysis/discriminator/fp_rate"] == pytest.approx(1 - metrics["analysis/discriminator/acc_fake"])


def test_retrain_matrix_has_every_row(runs, tmp_path):
    assert cli(runs, "retrain", "cgan-mlp", *RETRAIN) == 0
    client, run_id = MlflowClient(runs["store"]), runs["cgan-mlp"]
    rows = read_json(runs["store"], run_id, "analysis/retrain/matrix.json", tmp_path)
    assert [r["name"] for r in rows] == retrain.row_names()
    by_name = {r["name"]: r for r in rows}
    assert (by_name["mix/gen0"]["real"], by_name["mix/gen0"]["generated"]) == (100, 0)
    assert (by_name["mix/gen20"]["real"], by_name["mix/gen20"]["generated"]) == (80, 20)
    assert (by_name["add/gen50"]["real"], by_name["add/gen50"]["generated"]) == (100, 50)
    assert by_name["few/real"]["real"] == 20 and by_name["few/real_and_gen"]["generated"] == 50
    assert by_name["gen_then_real/ft10"]["finetune_n"] == 10
    assert (by_name["mix/gen30"]["real"], by_name["mix/gen30"]["generated"]) == (70, 30)
    assert (by_name["add/gen30"]["real"], by_name["add/gen30"]["generated"]) == (100, 30)
    assert [by_name[f"real_then_gen/ft{p}"]["finetune_n"] for p in (50, 100)] == [50, 100]
    assert by_name["few/gen_then_real"]["finetune_on"] == "real" and by_name["few/gen_then_real"]["finetune_n"] == 20
    assert all(r["test_acc"] is None or 0.0 <= r["test_acc"] <= 1.0 for r in rows)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["analysis/retrain/cas"] == by_name["mix/gen100"]["test_acc"]
    files = artifacts(client, run_id, "analysis/retrain")
    assert "analysis/retrain/matrix.png" in files and "analysis/retrain/curves.png" in files
    curves = read_json(runs["store"], run_id, "analysis/retrain/curves.json", tmp_path)
    assert [(c["set"], c["epoch"]) for c in curves] == [(s, e) for s in ("real", "generated", "mixed50") for e in (1, 2)]
    history = client.get_metric_history(run_id, "analysis/retrain/curves/generated/test_acc")
    assert sorted((h.step, h.value) for h in history) == [(c["epoch"], c["test_acc"]) for c in curves
                                                          if c["set"] == "generated"]


def small_retrain(**kw) -> retrain.Options:
    return retrain.Options(**{"real_size": 100, "epochs": 1, "finetune_epochs": 1, "min_steps": 0, "batch_size": 50,
                              "few_per_class": 2, "few_generated": 50, "max_draws": 1, "n_test": 100, **kw})


def test_table6_finetunes_start_from_the_real_trained_weights(cgan, monkeypatch):
    calls = []
    real_train = retrain.train_classifier

    def recording(data, epochs, *, net=None, **kw):
        start = None if net is None else {k: v.clone() for k, v in net.state_dict().items()}
        out = real_train(data, epochs, net=net, **kw)
        calls.append({"start": start, "end": {k: v.clone() for k, v in out.state_dict().items()}, "n": len(data),
                      "net": out})
        return out

    monkeypatch.setattr(retrain, "train_classifier", recording)
    res = retrain.analyze(cgan, small_retrain(groups=("real_then_gen",)), progress=False)
    assert [r["name"] for r in res.tables["matrix"]] == ["mix/gen0", "real_then_gen/ft50", "real_then_gen/ft100"]
    base, ft50, ft100 = calls
    assert base["start"] is None and base["n"] == 100  # mix/gen0: from scratch on the 100 real images
    for ft, n in ((ft50, 50), (ft100, 100)):
        assert ft["n"] == n and ft["net"] is not base["net"]  # a copy: fine-tuning never changes the base
        assert all(torch.equal(ft["start"][k], base["end"][k]) for k in base["end"])
        assert any(not torch.equal(ft["end"][k], base["end"][k]) for k in base["end"])


def test_curve_ends_where_the_same_training_from_scratch_ends(cgan):
    """The per-epoch scoring does not disturb training: 2 curve epochs on the real set finish exactly where
    mix/gen0 (2 epochs, same seed, same data) finishes."""
    res = retrain.analyze(cgan, small_retrain(epochs=2, curve_epochs=2, groups=("real_then_gen", "curves")),
                          progress=False)
    acc = {r["name"]: r["test_acc"] for r in res.tables["matrix"]}
    assert res.metrics["curves/real/final_acc"] == acc["mix/gen0"]
    assert [e for e, _ in res.series["curves/real/test_acc"]] == [1, 2]
    assert {pt["set"] for pt in res.tables["curves"]} == {"real", "generated", "mixed50"}


def test_verdict_grid_shows_sigmoid_of_d(cgan):
    from bench.models import as_trained

    res = common.AnalysisResult("discriminator")
    discriminator.verdicts(cgan, res, 5, torch.Generator().manual_seed(3), seed=0)
    D = cgan.gan.discriminator
    expected = []
    for kind, x, y in discriminator.verdict_inputs(cgan, 5, torch.Generator().manual_seed(3)):
        with torch.no_grad(), as_trained(D, 0):
            expected += torch.sigmoid(D(x, y)).flatten().tolist()
    rows = res.tables["verdicts"]
    assert [r["kind"] for r in rows] == ["real"] * 5 + ["generated"] * 5
    assert [r["d_prob"] for r in rows] == pytest.approx(expected, abs=1e-6)
    assert [r["label"] for r in rows[5:]] == [0, 1, 2, 3, 4]  # conditional: labels in turn
    ax = res.figures["verdicts"].axes[0]
    titles = [t.get_text() for t in ax.texts if t.get_text().startswith("D ")]
    assert titles == [f"D {p:.2f}" for p in expected]  # each tile says sigmoid(D(x)); padding says nothing
    frames = [p.get_edgecolor() for p in ax.patches]
    green = matplotlib.colors.to_rgba("tab:green")
    assert [f == green for f in frames] == [p > 0.5 for p in expected]


def test_style_grid_columns_share_z():
    z = torch.randn(5, 7)
    zs, ys = latent.style_inputs(4, 3, z)
    assert zs.shape == (12, 7) and ys.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i in range(12):
        assert torch.equal(zs[i], z[i % 3])  # column j holds z[j] in every row


def test_style_grid_images_are_g_of_column_z(cgan):
    res = common.AnalysisResult("latent")
    latent.z_style(cgan, res, latent.Options(style_columns=3), torch.Generator().manual_seed(5))
    z = common.noise(3, cgan.latent_dim, torch.Generator().manual_seed(5), cgan.device)
    rows = res.tables["z_style"]
    assert [(r["class"], r["column"]) for r in rows] == [(c, j) for c in range(10) for j in range(3)]
    cols, classes = torch.tensor([r["column"] for r in rows]), torch.tensor([r["class"] for r in rows])
    probs, _ = cgan.ctx.evaluator(common.generate(cgan.gan.generator, z[cols], classes))  # G(z of the column, row class)
    conf, pred = probs.double().max(1)
    assert [r["pred"] for r in rows] == pred.tolist()
    assert [r["conf"] for r in rows] == pytest.approx(conf.tolist(), abs=1e-6)


def test_knn_separation_and_embedding_shapes():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 6, generator=gen).numpy(), torch.randn(40, 6, generator=gen).numpy()
    kind = np.array([False] * 40 + [True] * 40)
    assert features.knn_separation(np.concatenate([a, b + 50]), kind) == 1.0  # far apart
    assert features.knn_separation(np.concatenate([a, b]), kind) < 0.8  # one distribution
    pca, tsne, explained = features.embed(np.concatenate([a, b]), 0, features.usable_perplexity(30, 80), 250)
    assert pca.shape == tsne.shape == (80, 2) and 0 < explained.sum() <= 1
    assert features.usable_perplexity(30, 1000) == 30 and features.usable_perplexity(30, 10) == 3


def test_features_are_reproducible(cgan):
    opts = features.Options(n=30, tsne_iter=250)
    a, b = (features.analyze(cgan, opts, progress=False) for _ in range(2))
    assert a.tables["coordinates"] == b.tables["coordinates"] and a.metrics == b.metrics
    other = features.analyze(cgan, features.Options(n=30, tsne_iter=250, seed=1), progress=False)
    assert other.tables["coordinates"] != a.tables["coordinates"]  # the seed matters


def test_features_end_to_end(runs, tmp_path):
    assert cli(runs, "features", "cgan-mlp", "--n", "40", "--tsne-iter", "250") == 0
    client, run_id = MlflowClient(runs["store"]), runs["cgan-mlp"]
    files = artifacts(client, run_id, "analysis/features")
    for name in ("embedding.png", "coordinates.json", "coordinates.csv", "summary.json"):
        assert f"analysis/features/{name}" in files, (name, files)
    rows = read_json(runs["store"], run_id, "analysis/features/coordinates.json", tmp_path)
    assert [r["source"] for r in rows] == ["real"] * 40 + ["generated"] * 40  # one row per image
    assert sorted(r["label"] for r in rows[40:]) == sorted(list(range(10)) * 4)
    assert all(math.isfinite(r[k]) for r in rows for k in ("pca_1", "pca_2", "tsne_1", "tsne_2"))
    metrics = client.get_run(run_id).data.metrics
    assert 0.0 <= metrics["analysis/features/knn_separation"] <= 1.0
    assert 0.0 < metrics["analysis/features/pca_explained_1"] <= 1.0
    summary = read_json(runs["store"], run_id, "analysis/features/summary.json", tmp_path)
    assert any("perplexity lowered" in n for n in summary["notes"])  # 80 points: perplexity 30 -> 26.3


# ---------------------------------------------------------------------------
# Unconditional runs, bad input, studies


def test_unconditional_run_skips_embedding_analyses(runs, capsys):
    assert cli(runs, "latent", "vanilla", *LATENT) == 0
    out = capsys.readouterr().out
    assert "unconditional" in out and "label-embedding analyses skipped" in out and "z-as-style grid" in out
    files = artifacts(MlflowClient(runs["store"]), runs["vanilla"], "analysis/latent")
    assert "analysis/latent/class_means.png" in files and "analysis/latent/mdm_agreement.json" in files
    assert not any("embedding" in f or "ood" in f or "z_style" in f for f in files), files
    # report 000's case: uniform noise on the class-mean latent vectors of an unconditional G
    assert "analysis/latent/noise_latent_uniform.png" in files or "no class has a labeled mean" in out
    assert cli(runs, "discriminator", "vanilla", "--n", "5") == 0
    assert cli(runs, "features", "vanilla", "--n", "20", "--tsne-iter", "250") == 0
    assert "coloured by the evaluator's label" in capsys.readouterr().out


def test_unknown_run_exits_2(runs, capsys):
    assert main(["analyze", "latent", "--run", "0123456789abcdef", "--tracking-uri", runs["store"]]) == 2
    assert "0123456789abcdef" in capsys.readouterr().err


def test_missing_store_exits_2_without_creating_it(tmp_path, capsys):
    db = tmp_path / "nowhere.db"
    assert main(["analyze", "discriminator", "--run", "abc", "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert "no MLflow database" in capsys.readouterr().err
    assert not db.exists()


def test_retrain_impossible_subset_exits_2(runs, capsys):
    assert cli(runs, "retrain", "cgan-mlp", "--real-size", "200", "--few-per-class", "50") == 2
    assert "--few-per-class" in capsys.readouterr().err


@pytest.mark.parametrize("analysis,option,value", [("latent", "--threshold", "1.5"), ("retrain", "--groups", "mix,bogus"),
                                                   ("retrain", "--curve-mix", "101"),
                                                   ("latent", "--uniform-amplitudes", "0.1,-0.2")])
def test_bad_option_exits_2(runs, capsys, analysis, option, value):
    with pytest.raises(SystemExit) as e:
        cli(runs, analysis, "cgan-mlp", option, value)
    assert e.value.code == 2 and option in capsys.readouterr().err


def test_features_too_many_real_images_exits_2(runs, capsys):
    assert cli(runs, "features", "cgan-mlp", "--n", "20000") == 2
    assert "--n" in capsys.readouterr().err


def test_study_resolves_to_best_trial(runs):
    client = MlflowClient(runs["store"])
    exp = client.get_experiment_by_name("analysis").experiment_id
    fid = {m: client.get_run(runs[m]).data.metrics["eval/fid"] for m in ("cgan-mlp", "vanilla")}
    for trial, model in enumerate(("cgan-mlp", "vanilla")):
        for k, v in {TAG_STUDY: "s1", TAG_ROLE: "trial", TAG_TRIAL: str(trial)}.items():
            client.set_tag(runs[model], k, v)
    with pytest.raises(InputError, match="objective"):
        common.best_trial_run(runs["store"], "s1")  # no parent run yet
    parent = client.create_run(exp, tags={TAG_STUDY: "s1", TAG_ROLE: "parent", "objective": "eval/fid:minimize,eval/is:maximize"})
    client.set_terminated(parent.info.run_id)
    best, why = common.best_trial_run(runs["store"], "s1")
    assert best == runs[min(fid, key=fid.get)] and "eval/fid" in why
    best, _ = common.best_trial_run(runs["store"], "s1", "eval/fid:maximize")
    assert best == runs[max(fid, key=fid.get)]
    with pytest.raises(InputError, match="s2"):
        common.best_trial_run(runs["store"], "s2", "eval/fid:minimize")
