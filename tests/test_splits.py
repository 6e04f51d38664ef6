"""The train / val / test splits: the validation split carved from training, and what it is called."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, write_tiny_mnist

from rnnflow.data.base import DataBundle, Split, carve_validation
from rnnflow.errors import DataError, SpecError
from rnnflow.spec import spec_from_text

GRU = ROOT / "specs" / "gru_forecast.yaml"


def bundle(labels: np.ndarray, task: str = "classification") -> DataBundle:
    x = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1)
    return DataBundle(train=Split(x=x, y=labels), test=None, task=task, output_size=3, sequence_targets=False)


def test_a_fraction_of_the_training_part_becomes_the_validation_split_stratified():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    data = carve_validation(bundle(labels), 0.1, seed=3)
    assert (len(data.train), len(data.val)) == (90, 10)
    assert np.bincount(data.val.y, minlength=3).tolist() == [5, 3, 2]  # the classes' proportions
    # Nothing is lost or shared: every training row is in exactly one of the two parts.
    rows = np.concatenate([data.train.x[:, 0, 0], data.val.x[:, 0, 0]])
    assert sorted(rows.tolist()) == list(range(100))
    # The same seed draws the same rows; another seed others.
    again = carve_validation(bundle(labels), 0.1, seed=3)
    np.testing.assert_array_equal(again.val.x, data.val.x)
    other = carve_validation(bundle(labels), 0.1, seed=4)
    assert not np.array_equal(other.val.x, data.val.x)


def test_a_count_of_sequences_and_largest_remainders():
    labels = np.array([0] * 7 + [1] * 7 + [2] * 6)
    data = carve_validation(bundle(labels), 5, seed=0)
    assert len(data.val) == 5 and len(data.train) == 15
    assert sorted(np.bincount(data.val.y, minlength=3).tolist()) == [1, 2, 2]


def test_regression_rows_are_drawn_at_random():
    data = carve_validation(bundle(np.linspace(0, 1, 40).astype(np.float32), task="regression"), 0.25, seed=0)
    assert len(data.val) == 10 and data.val.x[:, 0, 0].tolist() != list(range(10))  # not the first rows


def test_too_small_a_training_part_is_a_data_error():
    with pytest.raises(DataError, match="train.validation: 5 of 5 training sequences leaves nothing to train on"):
        carve_validation(bundle(np.zeros(5, int)), 5, seed=0)
    with pytest.raises(DataError, match="leaves no validation"):
        carve_validation(bundle(np.zeros(5, int)), 0.01, seed=0)


SINE = "name: s\ndata: {type: sine}\nmodel: {cells: [{type: gru, units: 2}]}\n"


@pytest.mark.parametrize("train, message", [
    ("{validation: source}", "train.validation: the sine source has no validation split of its own"),
    ("{validation: 1.5}", "train.validation: a fraction is between 0 and 1"),
    ("{validation: 0}", "train.validation: a count of sequences is at least 1"),
    ("{validation: yes}", "train.validation"),
])
def test_bad_validation_settings_are_located(train, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        spec_from_text(SINE + f"train: {train}\n")


def test_a_step_on_a_split_that_does_not_exist_is_refused():
    text = SINE + "evaluate: {steps: [{type: predictions, split: val}]}\n"
    with pytest.raises(SpecError, match=r"evaluate.steps\[0\].split: there is no val split here"):
        spec_from_text(text)
    spec = spec_from_text(text + "train: {validation: 0.1}\n")
    assert spec.split_names == ("train", "val", "test")


def test_the_old_name_of_the_test_split_still_reads():
    spec = spec_from_text(SINE + "evaluate: {steps: [{type: predictions, split: eval}]}\n")
    assert spec.evaluate.steps[0].split == "test"


def test_a_run_with_validation_logs_every_split(mlflow_store, client, tmp_path):
    from rnnflow.runner import run

    result = run(GRU, ["train.iterations=20", "data.train_windows=50", "data.eval_windows=6",
                       "model.cells[0].units=4", "evaluate.steps=[{type: predictions}]", "evaluate.every=10",
                       "train.validation=0.2", "train.early_stopping=null", "tracking.experiment=splits"])
    metrics = client.get_run(result.run_id).data.metrics
    for name in ("train_loss", "val_loss", "test_loss", "val_mse", "test_mae"):
        assert np.isfinite(metrics[name]), name
    # During training the validation split is evaluated, never the test split.
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")] == [10, 20]
    assert [m.step for m in client.get_metric_history(result.run_id, "test_loss")] == [20]
    assert result.metrics["val_loss"] != result.metrics["test_loss"]


def test_validation_of_mnist_is_stratified_from_the_training_images(tmp_path):
    from rnnflow.data.base import load_data

    path = write_tiny_mnist(tmp_path / "m.npz", train=200, test=50)
    spec = spec_from_text(f"name: m\ndata: {{type: mnist, path: {path}}}\n"
                          "model: {cells: [{type: rnn, units: 2}], output: last}\n"
                          "train: {loss: sparse_categorical_crossentropy, validation: 40}\n")
    data = load_data(spec)
    assert (len(data.train), len(data.val), len(data.test)) == (160, 40, 50)
    full = np.bincount(np.concatenate([data.train.y, data.val.y]), minlength=10)
    assert np.abs(np.bincount(data.val.y, minlength=10) - full * 40 / 200).max() < 1
