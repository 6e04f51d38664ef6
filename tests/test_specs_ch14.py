"""The chapter-14 experiments keep their TF1 semantics: checked on the specs themselves."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, shrink

from rnnflow.cli import main

SPECS = ROOT / "specs"


@pytest.fixture(scope="module")
def run_spec(mlflow_store, tiny_mnist):
    from rnnflow.runner import run

    def go(name, extra=()):
        path = SPECS / f"{name}.yaml"
        return run(path, [*shrink(path), *extra])

    return go


def artifact(client, run_id: str, name: str, tmp_path: Path) -> Path:
    return Path(client.download_artifacts(run_id, name, str(tmp_path)))


def load(name: str, overrides=()):
    from rnnflow.build import build_model
    from rnnflow.data.base import LoadContext
    from rnnflow.spec import load_spec

    spec = load_spec(SPECS / f"{name}.yaml", overrides)
    data = spec.data.load(LoadContext(spec.seed, spec.base_dir))
    return spec, data, build_model(spec, data)


def test_basic_rnn_logs_both_steps_as_computed_by_hand(run_spec, client, tmp_path):
    result = run_spec("basic_rnn")
    record = json.loads(artifact(client, result.run_id, "outputs.json", tmp_path).read_text())
    kernel, recurrent, bias = result.built.model.get_layer("rnn_0").get_weights()
    x0 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)
    x1 = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)
    y0 = np.tanh(x0 @ kernel + bias)
    y1 = np.tanh(y0 @ recurrent + x1 @ kernel + bias)
    outputs = np.array(record["outputs"])
    assert outputs.shape == (4, 2, 5)
    np.testing.assert_allclose(outputs[:, 0], y0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[:, 1], y1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(record["states"]["rnn_0"]), y1, rtol=1e-5, atol=1e-6)


def test_static_and_dynamic_unrolling_agree():
    _, data, static = load("static_unroll")
    _, _, dynamic = load("dynamic_unroll")
    assert static.model.get_layer("rnn_0").unroll and not dynamic.model.get_layer("rnn_0").unroll
    dynamic.model.set_weights([w * 0.5 for w in static.model.get_weights()])
    static.model.set_weights(dynamic.model.get_weights())
    np.testing.assert_allclose(static.predict(data.test), dynamic.predict(data.test), rtol=1e-6, atol=1e-6)


def test_variable_length_outputs_are_zero_and_state_is_last_valid(run_spec, client, tmp_path):
    result = run_spec("variable_length")
    record = json.loads(artifact(client, result.run_id, "outputs.json", tmp_path).read_text())
    outputs, state = np.array(record["outputs"]), np.array(record["states"]["rnn_0"])
    lengths = record["lengths"]
    assert lengths == [2, 1, 2, 2]
    assert np.all(outputs[1, 1] == 0.0)  # past the second instance's length: exactly zero
    assert np.all(outputs[[0, 2, 3], 1] != 0.0)
    for i, length in enumerate(lengths):
        np.testing.assert_array_equal(state[i], outputs[i, length - 1])


def test_eos_positions_do_not_count():
    from rnnflow.train import loss_value, metric_values

    spec, data, built = load("variable_output", ["data.generate.count=20", "data.generate.eval_count=10"])
    split = data.test
    assert split.weights is not None and (split.weights == 0).any()
    pred = built.predict(split)
    before = metric_values(["accuracy"], spec.train.loss, split, pred, 1)
    changed = np.where(split.weights > 0, split.y, (split.y + 3) % data.output_size)
    assert (changed != split.y).any()
    split.y = changed
    after = metric_values(["accuracy"], spec.train.loss, split, pred, 1)
    assert before == after
    # ...whereas a target before the EOS does change the loss.
    split.y = split.y.copy()
    split.y[0, 0] = (split.y[0, 0] + 1) % data.output_size
    assert float(loss_value(spec.train.loss, split.y, pred, split.weights)) != before["loss"]


def test_mnist_classifier_tiny_run_logs_accuracy_and_confusion_matrix(run_spec, client, tmp_path):
    """The logged accuracy is the accuracy of the logged predictions (and of the confusion matrix)."""
    result = run_spec("mnist_classifier")
    metrics = client.get_run(result.run_id).data.metrics
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"confusion_matrix.png", "confusion_matrix.csv", "predictions.csv"} <= names
    rows = list(csv.DictReader(artifact(client, result.run_id, "predictions.csv", tmp_path).read_text().splitlines()))
    assert len(rows) == 30  # data.eval_limit of the tiny run: every test image
    right = sum(r["label"] == r["predicted"] for r in rows)
    assert metrics["test_accuracy"] == pytest.approx(right / len(rows), abs=1e-6)
    assert metrics["test_top_1_accuracy"] == pytest.approx(metrics["test_accuracy"])
    table = csv.reader(artifact(client, result.run_id, "confusion_matrix.csv", tmp_path).read_text().splitlines())
    matrix = np.array([row[1:] for row in list(table)[1:]], int)
    assert matrix.shape == (10, 10) and matrix.sum() == len(rows) and np.trace(matrix) == right
    assert len(client.get_metric_history(result.run_id, "test_accuracy")) >= 1


def _real_mnist() -> tuple[Path | None, str]:
    """(MNIST where rnnflow looks for it, or None and why not): $RNNFLOW_MNIST, then Keras' cache.

    Decided when this module is imported, before the tiny_mnist fixture points $RNNFLOW_MNIST at
    its fake file for the session; a file that is not the full MNIST does not count either.
    """
    from rnnflow.data.mnist import ENV_VAR, keras_cache_path, local_mnist
    from rnnflow.errors import DataError

    try:
        path = local_mnist()
    except DataError as error:
        return None, str(error)
    if path is None:
        return None, f"no MNIST: ${ENV_VAR} is not set and {keras_cache_path()} does not exist (.ci/run puts it there)"
    with np.load(path) as archive:
        images = len(archive["y_train"]) if "y_train" in archive.files else 0
    if images != 60000:
        return None, f"{path} holds {images} training images, not MNIST's 60000"
    return path, ""


REAL_MNIST, NO_REAL_MNIST = _real_mnist()


def test_mnist_classifier_learns_real_digits(mlflow_store):
    """Real MNIST (from $RNNFLOW_MNIST or Keras' cache): 300 steps of the book's model pass 85 %."""
    if REAL_MNIST is None:
        pytest.skip(NO_REAL_MNIST)
    from rnnflow.runner import run

    result = run(SPECS / "mnist_classifier.yaml", [f"data.path={REAL_MNIST}", "train.epochs=null",
                                                   "train.iterations=300"])
    assert result.metrics["test_accuracy"] > 0.85, result.metrics


def test_creative_rnn_generates_from_zeros_and_from_an_instance(run_spec, client, tmp_path):
    result = run_spec("creative_rnn")
    for name in ("generated_from_zeros", "generated_from_instance"):
        rows = list(csv.DictReader(artifact(client, result.run_id, f"{name}.csv", tmp_path).open()))
        seed = [r for r in rows if r["seed"] == "1"]
        generated = [r for r in rows if r["seed"] == "0"]
        assert len(seed) == 20 and len(generated) == 5
        assert all(np.isfinite(float(r["value"])) for r in rows)
        if name == "generated_from_zeros":
            assert all(float(r["value"]) == 0.0 for r in seed)
        assert artifact(client, result.run_id, f"{name}.png", tmp_path).stat().st_size > 1000


def test_generation_seeded_from_a_test_window_says_so_and_draws_the_true_continuation(tmp_path, monkeypatch):
    """It seeded from training window 0 while the title said 'instance'; no truth, no y label."""
    from rnnflow import plots
    from rnnflow.data.sine import series
    from rnnflow.steps import StepContext

    spec, data, built = load("gru_forecast", ["data.train_windows=4", "data.eval_windows=2",
                                              "model.cells[0].units=4"])
    step = next(s for s in spec.evaluate.steps if s.type == "generate").model_copy(update={"length": 6})
    drawn = {}
    monkeypatch.setattr(plots, "generated", lambda *args, **kwargs: drawn.update(kwargs, args=args) or args[2])
    context = StepContext(built=built, data=data, out_dir=tmp_path, seed=spec.seed, predict=built.predict,
                          metrics={}, source=spec.data)
    step.run(context)
    rows = list(csv.DictReader((tmp_path / "generate.csv").open()))
    seed_rows, generated = rows[:20], rows[20:]
    window_time = data.test.time[0]  # the plotted window, which starts at t = 12.2
    assert [float(r["value"]) for r in seed_rows] == pytest.approx(data.test.x[0, :, 0].tolist())
    assert [float(r["time"]) for r in seed_rows] == pytest.approx((window_time - 0.1).tolist())
    times = [float(r["time"]) for r in generated]
    assert times == pytest.approx(window_time[-1] + 0.1 * np.arange(6))  # the first point follows the window
    assert [float(r["truth"]) for r in generated] == pytest.approx(series("sine_mix", times).tolist(), abs=1e-6)
    assert drawn["title"] == "6 steps generated from test window 0 (t = 12.2 to 14.1)"
    assert drawn["ylabel"] == "x(t) = t*sin(t)/3 + 2*sin(5t)"
    np.testing.assert_allclose(drawn["truth"][:, 0], series("sine_mix", times), atol=1e-6)


def test_generate_plot_draws_seed_generation_and_truth(tmp_path):
    from rnnflow import plots

    seed = np.sin(np.linspace(0, 2, 20))[:, None]
    path = plots.generated(seed, seed[:5], tmp_path / "g.png", title="t", seed_time=np.linspace(0, 2, 20),
                           time=np.linspace(2.1, 2.5, 5), truth=seed[:5], ylabel="x(t) = sin(t)")
    assert path.stat().st_size > 1000


def test_generation_feeds_predictions_back():
    _, data, built = load("creative_rnn", ["data.train_windows=4", "data.eval_windows=2"])
    window = data.train.x[0]
    produced = built.generate(window, 3)
    first = built.predict(type(data.train)(x=window[None]))[0, -1]
    np.testing.assert_allclose(produced[0], first, rtol=1e-5)
    second_window = np.concatenate([window[1:], produced[:1]])
    np.testing.assert_allclose(produced[1], built.predict(type(data.train)(x=second_window[None]))[0, -1],
                               rtol=1e-5)


def test_deep_rnn_has_ten_layers():
    spec, _, built = load("deep_rnn")
    names = [layer.name for layer in built.model.layers]
    assert [f"rnn_{i}" for i in range(10)] == [n for n in names if n.startswith("rnn_")]
    assert spec.train.learning_rate == 1e-5


def test_multi_device_falls_back_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="rnnflow"):
        _, _, built = load("multi_device")
    warnings = [r for r in caplog.records if "devices not found" in r.getMessage()]
    assert len(warnings) == 1
    assert all(name in warnings[0].getMessage() for name in ("/gpu:0", "/gpu:1", "/gpu:2"))
    assert [p.device for p in built.plans] == [None, None, None]


def test_dropout_model_predicts_deterministically(run_spec, client, tmp_path):
    result = run_spec("dropout")
    runner = CliRunner()
    outputs = [runner.invoke(main, ["predict", "--run", result.run_id]) for _ in range(2)]
    assert all(o.exit_code == 0 for o in outputs), outputs[0].output
    assert outputs[0].output == outputs[1].output
    first = np.array(json.loads(outputs[0].output))
    assert first.shape == (8, 20, 1)
    # Dropout is real while training: two training-mode passes differ.
    x = np.ones((1, 20, 1), np.float32)
    model = result.built.model
    assert not np.allclose(model(x, training=True), model(x, training=True))
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    # From a file, and written to a file.
    np.save(tmp_path / "in.npy", x)
    out = runner.invoke(main, ["predict", "--run", result.run_id, "--input", str(tmp_path / "in.npy"),
                               "--output", str(tmp_path / "out.npy")])
    assert out.exit_code == 0, out.output
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model(x, training=False), rtol=1e-5)
    np.save(tmp_path / "bad.npy", np.ones((2, 7, 3), np.float32))
    bad = runner.invoke(main, ["predict", "--run", result.run_id, "--input", str(tmp_path / "bad.npy")])
    assert bad.exit_code == 1 and "this model reads (sequences, 20, 1)" in bad.output


def test_show_reports_cudnn_eligibility():
    runner = CliRunner()
    out = runner.invoke(main, ["show", str(SPECS / "gru.yaml"), "--set", "model.cells[0].layers=1"])
    assert out.exit_code == 0, out.output
    assert "cuDNN on a GPU: no - activation is relu (cuDNN needs tanh); reset_after is false" in out.output
    out = runner.invoke(main, ["show", str(SPECS / "lstm.yaml"), "--set", "model.cells[0].layers=1"])
    assert "activation is relu (cuDNN needs tanh)" in out.output and "forget_bias is 1.0" in out.output
    out = runner.invoke(main, ["show", str(SPECS / "gru_forecast.yaml")])
    assert "cuDNN on a GPU: yes" in out.output
