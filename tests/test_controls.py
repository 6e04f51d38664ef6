"""Training controls: learning-rate schedules, early stopping, plateau, restore-best, max_minutes.

The learning rate of every schedule against Keras' schedule objects; early stopping and plateau
on scripted validation curves against Keras' own callbacks fed the same curves; the best weights
chosen by the validation split only (never by the test split); resume with every control on.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import ROOT
from test_faults import InterruptAt

GRU = ROOT / "specs" / "gru_forecast.yaml"
# The spec without its controls (each test adds the ones it is about), tiny.
TINY = ["data.train_windows=40", "data.eval_windows=6", "model.cells[0].units=3", "train.batch_size=8",
        "train.log_every=1", "train.jit_compile=false", "evaluate.steps=[]", "train.iterations=24",
        "train.steps_per_execution=5", "train.learning_rate=0.01", "train.validation=null",
        "train.schedule={type: constant}", "train.early_stopping=null", "evaluate.every=null"]


class Record(keras.callbacks.Callback):
    """Every logged point's logs, and the weights at each evaluation."""

    def __init__(self):
        super().__init__()
        self.logs: dict[int, dict[str, float]] = {}
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_train_batch_end(self, batch, logs=None):
        self.logs[batch] = dict(logs or {})
        if any(k.startswith(("val_", "test_")) for k in logs or {}):
            self.weights[batch] = [np.array(w) for w in self.model.get_weights()]


def make_trainer(*overrides: str):
    from rnnflow.build import build_model
    from rnnflow.data.base import load_data
    from rnnflow.spec import load_spec
    from rnnflow.train import Trainer, seed_everything

    spec = load_spec(GRU, [*TINY, *overrides])
    seed_everything(spec.seed)
    data = load_data(spec)
    record = Record()
    return Trainer(spec, build_model(spec, data), data, [record]), record


@pytest.fixture
def script(monkeypatch):
    """Scripted evaluations: `script(trainer, val=f, test=g)` makes the evaluation of that split
    during training return {"loss": f(iteration), "mae": f(iteration)}."""
    import rnnflow.train as train_module

    real = train_module.evaluate

    def install(trainer, **curves):
        def scripted(built, split, train_spec):
            name = next(n for n, s in trainer.data.splits().items() if s is split)
            if name not in curves:
                return real(built, split, train_spec)
            value = float(curves[name](int(trainer.iteration.numpy())))
            return {"loss": value, "mse": value, "mae": value}

        monkeypatch.setattr(train_module, "evaluate", scripted)

    return install


def same_weights(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- learning rate


def _keras_schedule(kind: str, rate: float, total: int, warmup: int):
    """The rate at each iteration from Keras' own schedule objects (warm-up: Keras' CosineDecay
    formula, lr * step / warmup, then the schedule from its own step 0)."""
    schedules = keras.optimizers.schedules
    span = total - warmup
    inner = {
        "constant": lambda s: rate,
        "exponential": schedules.ExponentialDecay(rate, span, 0.1),
        "step": schedules.PiecewiseConstantDecay([8, 16], [rate, rate * 0.1, rate * 0.01]),
        "cosine": schedules.CosineDecay(rate, span, alpha=0.05),
    }[kind]

    def at(step):
        if step < warmup:
            return rate * step / warmup
        return float(inner(step - warmup))

    return at


@pytest.mark.parametrize("warmup", [0, 6])
@pytest.mark.parametrize("kind, settings", [
    ("constant", ""), ("exponential", ""), ("step", ", every: 8"), ("cosine", ", alpha: 0.05")])
def test_learning_rate_follows_keras_schedules(kind, settings, warmup):
    trainer, record = make_trainer(f"train.schedule={{type: {kind}, warmup: {warmup}{settings}}}")
    result = trainer.run()
    expected = _keras_schedule(kind, 0.01, 24, warmup)
    logged = [record.logs[i]["learning_rate"] for i in range(1, 25)]
    np.testing.assert_allclose(logged, [expected(i) for i in range(1, 25)], rtol=1e-6, atol=1e-12)
    # The optimizer runs on that schedule: after 24 steps its rate is the logged one.
    assert int(trainer.optimizer.iterations.numpy()) == result.iterations == 24
    assert float(trainer.optimizer.learning_rate) == pytest.approx(logged[-1], rel=1e-6, abs=1e-12)
    if kind == "constant" and not warmup:
        assert isinstance(trainer.optimizer.learning_rate, keras.Variable)  # as before schedules existed


def test_warmup_is_keras_cosine_warmup():
    """rnnflow's warm-up around a schedule equals Keras' CosineDecay with warmup_target."""
    from rnnflow.controls import Warmup

    schedules = keras.optimizers.schedules
    ours = Warmup(schedules.CosineDecay(0.02, 90, alpha=0.1), 30)
    theirs = schedules.CosineDecay(0.0, 90, alpha=0.1, warmup_target=0.02, warmup_steps=30)
    steps = np.arange(0, 140)
    np.testing.assert_allclose([float(ours(s)) for s in steps], [float(theirs(s)) for s in steps], rtol=1e-6,
                               atol=1e-9)


def one_cycle_reference(step, max_lr, total, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    """PyTorch's OneCycleLR (anneal_strategy cos, two phases), written from its documented formula."""
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    end_up = float(pct_start * total) - 1
    end_down = float(total - 1)

    def cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if step <= end_up:
        return cos(initial, max_lr, step / end_up)
    return cos(max_lr, minimum, (step - end_up) / (end_down - end_up))


@pytest.mark.parametrize("warmup", [0, 4])
def test_one_cycle_follows_pytorchs_formula(warmup):
    trainer, record = make_trainer(f"train.schedule={{type: one_cycle, warmup: {warmup}, pct_start: 0.25}}")
    trainer.run()
    span = 24 - warmup
    # The warm-up climbs to the cycle's first rate; after its last step the rate stays at its end.
    first = one_cycle_reference(0, 0.01, span, 0.25)
    expected = [first * i / warmup if i < warmup else one_cycle_reference(min(i - warmup, span - 1), 0.01, span, 0.25)
                for i in range(1, 25)]
    logged = [record.logs[i]["learning_rate"] for i in range(1, 25)]
    np.testing.assert_allclose(logged, expected, rtol=1e-5)
    assert max(logged) == pytest.approx(0.01, rel=1e-5) and logged[-1] < 1e-5


def keras_plateau(curve, rate, **kwargs):
    """The rates Keras' ReduceLROnPlateau leaves on a compiled Keras model's optimizer after each
    value of `curve`."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="mse")
    callback = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", **kwargs)
    callback.set_model(model)
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(curve):
        callback.on_epoch_end(epoch, {"val_loss": value})
        rates.append(float(model.optimizer.learning_rate))
    return rates


CURVE = [1.0, 0.9, 0.95, 0.96, 0.97, 0.85, 0.86, 0.87, 0.88, 0.89, 0.7, 0.71]  # one value per evaluation


@pytest.mark.parametrize("warmup", [0, 5])
def test_plateau_lowers_the_rate_as_keras_reduce_lr_on_plateau(script, warmup):
    trainer, record = make_trainer(
        "train.validation=0.2", "evaluate.every=2",
        f"train.schedule={{type: plateau, patience: 2, factor: 0.5, cooldown: 1, min_delta: 0.01, warmup: {warmup}}}")
    script(trainer, val=lambda it: CURVE[it // 2 - 1])
    trainer.run()
    evaluations = sorted(i for i in record.logs if "val_loss" in record.logs[i])
    assert evaluations == list(range(2, 25, 2))
    expected = keras_plateau(CURVE, 0.01, patience=2, factor=0.5, cooldown=1, min_delta=0.01)
    assert expected[-1] < 0.01 / 4  # the curve makes it reduce several times
    got = [record.logs[i]["learning_rate"] for i in evaluations]
    if warmup:  # during the warm-up the rate climbs to the plateau's rate
        assert got[0] == pytest.approx(0.01 * 2 / warmup)
        got, expected = got[3:], expected[3:]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ---------------------------------------------------------------------------- early stopping


def keras_early_stopping(curve, monitor="val_loss", **kwargs):
    """(index of the evaluation Keras' EarlyStopping stops at or None, index of the best)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # as fit does
    callback = keras.callbacks.EarlyStopping(monitor=monitor, **kwargs)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(curve):
        callback.on_epoch_end(epoch, {monitor: value})
        if model.stop_training:
            return epoch, callback.best_epoch
    return None, callback.best_epoch


@pytest.mark.parametrize("mode, monitor, curve, patience, min_delta, stop_at, best_at", [
    # best at the 3rd evaluation, then three without improvement: stops at the 6th
    ("auto", "val_loss", [5, 4, 3, 3.5, 3.2, 3.1, 3.05, 2.0, 1.0, 0.5, 0.4, 0.3], 3, 0.0, 6, 3),
    # 2.95 is better than 3, but not by min_delta 0.1
    ("min", "val_loss", [5, 4, 3, 2.95, 2.92, 2.91, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 3, 0.1, 6, 3),
    # mode max: larger is better
    ("max", "val_mae", [0.1, 0.2, 0.5, 0.4, 0.6, 0.55, 0.58, 0.59, 0.3, 0.2, 0.1, 0.1], 4, 0.0, 9, 5),
    # never stops: patience null keeps the best only
    ("auto", "val_loss", [5, 4, 3, 3.5, 3.2, 3.1, 3.05, 3.2, 3.3, 3.4, 3.5, 3.6], None, 0.0, None, 3),
])
def test_early_stopping_stops_at_the_expected_evaluation(script, mode, monitor, curve, patience, min_delta,
                                                         stop_at, best_at):
    patience_yaml = "null" if patience is None else patience
    trainer, record = make_trainer(
        "train.validation=0.2", "evaluate.every=2", "train.metrics=[mse, mae]",
        f"train.early_stopping={{monitor: {monitor}, mode: {mode}, patience: {patience_yaml}, "
        f"min_delta: {min_delta}, restore_best: true}}")
    script(trainer, val=lambda it: curve[it // 2 - 1])
    result = trainer.run()
    keras_stop, keras_best = keras_early_stopping(
        curve, monitor=monitor, mode=mode, patience=math.inf if patience is None else patience,
        min_delta=min_delta)
    assert (None if keras_stop is None else keras_stop + 1) == stop_at and keras_best + 1 == best_at
    stopped = 2 * stop_at if stop_at else 24
    assert result.iterations == stopped
    assert result.stop_reason == ("early_stopping" if stop_at else "completed")
    assert result.best == (monitor, curve[best_at - 1], 2 * best_at)
    assert result.restored_from == 2 * best_at
    assert max(record.logs) == stopped and "loss" in record.logs[stopped]  # the last loss is logged
    assert same_weights(trainer.model.get_weights(), record.weights[2 * best_at])
    assert not same_weights(trainer.model.get_weights(), record.weights[stopped])


def test_restore_best_off_keeps_the_last_weights(script):
    trainer, record = make_trainer("train.validation=0.2", "evaluate.every=4",
                                   "train.early_stopping={patience: 2, restore_best: false}")
    script(trainer, val=lambda it: [1, 2, 3, 4, 5, 6][it // 4 - 1])
    result = trainer.run()
    assert (result.stop_reason, result.iterations, result.restored_from) == ("early_stopping", 12, None)
    assert same_weights(trainer.model.get_weights(), record.weights[12])


def test_the_test_split_never_chooses_the_weights(script):
    """Val and test disagree about the best iteration: the weights follow val. Fails if a test
    metric influences which weights the run ends with."""
    trainer, record = make_trainer("train.validation=0.2", "evaluate.every=4",
                                   "train.early_stopping={patience: null, restore_best: true}")
    val = {4: 3.0, 8: 1.0, 12: 2.0, 16: 2.5, 20: 2.6, 24: 2.7}
    test = {4: 3.0, 8: 2.0, 12: 2.5, 16: 0.1, 20: 2.6, 24: 2.7}
    script(trainer, val=val.get, test=test.get)
    result = trainer.run()
    assert result.restored_from == 8 and result.best == ("val_loss", 1.0, 8)
    assert same_weights(trainer.model.get_weights(), record.weights[8])
    assert not any(k.startswith("test_") for logs in record.logs.values() for k in logs)


# ------------------------------------------------------------------------------- time budget


def test_max_minutes_stops_at_a_chunk_boundary_counting_earlier_sessions(script):
    trainer, record = make_trainer("train.validation=0.2", "evaluate.every=10", "train.max_minutes=1",
                                   "train.early_stopping={restore_best: true}")
    # A resumed run that already trained for 61 seconds: the budget is spent after the first chunk.
    trainer.load_state(trainer.state(), {"elapsed_seconds": 61.0})
    result = trainer.run()
    assert (result.stop_reason, result.iterations) == ("max_minutes", 5)
    assert trainer.elapsed > 61.0
    # It also evaluated there: the last weights are a candidate for the best.
    assert "val_loss" in record.logs[5] and result.best[2] == 5 and result.restored_from == 5


# ------------------------------------------------------------------------ through the runner


@pytest.fixture(scope="module")
def runner_api(mlflow_store):
    from rnnflow.runner import run

    return run


def test_a_run_records_why_it_stopped_and_the_best_evaluation(runner_api, client):
    import mlflow.keras

    overrides = [*TINY, "train.iterations=40", "train.validation=0.2", "evaluate.every=4",
                 "train.early_stopping={patience: 2, min_delta: 1000.0}", "evaluate.steps=[{type: predictions}]",
                 "tracking.experiment=controls"]
    result = runner_api(GRU, overrides)
    run = client.get_run(result.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["rnnflow.stop_reason"] == result.stop_reason == "early_stopping"
    best = int(metrics["best_iteration"])
    stopped = int(metrics["stopped_iteration"])
    assert stopped == result.iterations == best + 8  # two evaluations without improvement
    assert tags["rnnflow.weights"] == result.weights == f"best@iteration {best}"
    history = {m.step: m.value for m in client.get_metric_history(result.run_id, "val_loss")
               if m.step < stopped}
    assert metrics["best_val_loss"] == pytest.approx(history[best], rel=1e-6)
    # The final val metrics are the restored weights' (the best evaluation's), logged after the
    # last evaluation at the same step.
    assert metrics["val_loss"] == pytest.approx(history[best], rel=1e-5)
    last_two = [m for m in client.get_metric_history(result.run_id, "val_loss") if m.step == stopped]
    assert len(last_two) == 2 and last_two[-1].value == metrics["val_loss"]
    # During training only the validation split was evaluated.
    assert [m.step for m in client.get_metric_history(result.run_id, "test_loss")] == [stopped]
    assert [m.step for m in client.get_metric_history(result.run_id, "learning_rate")] == list(range(1, stopped + 1))
    # The logged model is the restored one.
    model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    sample = np.random.default_rng(0).normal(size=(3, 20, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(sample)), np.asarray(result.built.model(sample)), rtol=1e-6)


def test_a_run_without_controls_says_it_completed_with_its_last_weights(runner_api, client):
    result = runner_api(GRU, [*TINY, "tracking.experiment=controls"])
    run = client.get_run(result.run_id)
    assert run.data.tags["rnnflow.stop_reason"] == "completed"
    assert run.data.tags["rnnflow.weights"] == "last@iteration 24"
    assert run.data.metrics["stopped_iteration"] == 24 and "best_iteration" not in run.data.metrics
    assert run.data.metrics["learning_rate"] == pytest.approx(0.01)


def test_max_minutes_run_finishes_and_says_so(runner_api, client):
    result = runner_api(GRU, [*TINY, "train.max_minutes=0.00001", "tracking.experiment=controls"])
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rnnflow.stop_reason"] == "max_minutes"
    assert run.data.metrics["stopped_iteration"] == 5  # the first chunk
    assert np.isfinite(run.data.metrics["test_loss"])


EVERYTHING = [*TINY, "train.iterations=30", "train.steps_per_execution=3", "train.validation=0.2",
              "evaluate.every=3", "train.max_minutes=1000", "train.metrics=[mse]",
              # min_delta so large that nothing improves after the first evaluation: plateau lowers
              # the rate at each evaluation, early stopping counts to its patience and stops at 15.
              "train.early_stopping={patience: 4, min_delta: 1000000.0}",
              "train.schedule={type: plateau, patience: 1, min_delta: 1000000.0, warmup: 4}",
              "model.cells[0].bidirectional=true", "evaluate.steps=[{type: predictions}]",
              "tracking.experiment=controls-resume"]


def test_ctrl_c_and_resume_with_every_control_on_end_in_the_same_metrics(runner_api, client):
    from click.testing import CliRunner

    from rnnflow.cli import main
    from rnnflow.runner import RunInterrupted

    reference = runner_api(GRU, EVERYTHING)
    assert reference.stop_reason == "early_stopping" and reference.weights == "best@iteration 3"
    assert reference.iterations == 15
    with pytest.raises(RunInterrupted) as info:
        runner_api(GRU, EVERYTHING, callbacks=[InterruptAt(7)])
    run_id = info.value.run_id
    assert info.value.iteration == 9  # the end of the chunk
    assert client.get_run(run_id).data.tags["rnnflow.stop_reason"] == "interrupted"
    outcome = CliRunner().invoke(main, ["run", "--resume", run_id, "-q"])
    assert outcome.exit_code == 0, outcome.output
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["rnnflow.stop_reason"] == "early_stopping"
    assert resumed.data.tags["rnnflow.weights"] == "best@iteration 3"

    def final(metrics):
        return {k: v for k, v in metrics.items()
                if k.startswith(("train_", "val_", "test_", "best_", "stopped_")) and k != "train_seconds"}

    assert final(resumed.data.metrics) == final(reference.metrics)
    rates = {m.step: m.value for m in client.get_metric_history(run_id, "learning_rate")}
    expected = {m.step: m.value for m in client.get_metric_history(reference.run_id, "learning_rate")}
    assert rates == expected and min(rates.values()) < 0.01 * 0.1**2  # lowered at several evaluations


def test_a_nan_loss_is_tagged(runner_api, client):
    from rnnflow.errors import TrainingError

    with pytest.raises(TrainingError) as info:
        runner_api(GRU, [*TINY, "train.optimizer=sgd", "train.learning_rate=90", "train.iterations=60",
                         "tracking.experiment=controls"])
    run = client.get_run(info.value.rnnflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["rnnflow.stop_reason"] == "nan"
    assert run.data.metrics["stopped_iteration"] == info.value.iteration


def test_direction_auto():
    from rnnflow.spec.controls import direction

    assert direction("val_loss", "auto") == "min" and direction("val_mae", "auto") == "min"
    assert direction("val_accuracy", "auto") == "max" and direction("val_top_5_accuracy", "auto") == "max"
    assert direction("val_accuracy", "min") == "min"


def test_show_describes_the_controls():
    from rnnflow.show import control_notes
    from rnnflow.spec import load_spec

    spec = load_spec(GRU, ["train.validation=0.1", "evaluate.every=100", "train.learning_rate=0.003",
                           "train.schedule={type: cosine, warmup: 50}", "train.early_stopping={patience: 4}",
                           "train.max_minutes=5"])
    notes = "\n".join(control_notes(spec))
    assert "learning rate: cosine from 0.003, after 50 iterations of linear warm-up" in notes
    assert "the validation split, every 100 iterations and at the end" in notes
    assert "early stopping: val_loss (min), stops after 4 evaluations without improvement" in notes
    assert "stops after 5 minutes of training" in notes


def test_every_control_together_on_a_classifier(runner_api, client, tiny_mnist):
    """Validation, a warmed-up plateau schedule, early stopping on accuracy, a time budget, a
    bidirectional layer and output: mean, in one tiny MNIST run."""
    import mlflow.keras

    mnist = ROOT / "specs" / "mnist_classifier.yaml"
    result = runner_api(mnist, [
        "data.train_limit=120", "data.eval_limit=30", "train.validation=20", "train.epochs=4", "train.batch_size=20",
        "model.cells[0]={type: gru, units: 4, bidirectional: true, merge_mode: ave}", "model.output=mean",
        "model.unroll=false", "train.max_minutes=100",
        "train.schedule={type: plateau, monitor: val_accuracy, patience: 1, warmup: 3}",
        "train.early_stopping={monitor: val_accuracy, patience: 2, restore_best: true}",
        "tracking.experiment=controls"])
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["rnnflow.stop_reason"] in ("completed", "early_stopping")
    best = int(metrics["best_iteration"])
    assert tags["rnnflow.weights"] == f"best@iteration {best}" and best % 5 == 0  # an epoch end (5 steps)
    assert metrics["best_epoch"] == best / 5 and metrics["stopped_epoch"] == metrics["stopped_iteration"] / 5
    history = {m.step: m.value for m in client.get_metric_history(result.run_id, "val_accuracy")}
    assert metrics["best_val_accuracy"] == history[best] == max(history.values())
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")][:2] == [5, 10]
    model = mlflow.keras.load_model(f"runs:/{result.run_id}/model")
    sample = np.random.default_rng(1).uniform(size=(2, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model(sample)), np.asarray(result.built.model(sample)), rtol=1e-6)
