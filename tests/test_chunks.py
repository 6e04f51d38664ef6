"""The iteration plan: chunk sizes, stops, and log points independent of chunks."""

from __future__ import annotations

import pytest
from conftest import ROOT

from rnnflow.chunks import default_steps_per_execution, plan_iterations
from rnnflow.spec import load_spec


@pytest.mark.parametrize(
    "total, periods, expected",
    [(10000, [], 100), (2500, [], 100), (3, [], 3), (40000, [400], 100), (1500, [50], 50),
     (12, [], 12), (1013, [], 100), (360, [], 90)],
)
def test_default_chunk_divides_the_run_and_its_periods(total, periods, expected):
    assert default_steps_per_execution(total, periods) == expected


def test_plan_of_the_mnist_spec():
    spec = load_spec(ROOT / "specs" / "mnist_classifier.yaml")
    plan = plan_iterations(spec, 55000)  # 60,000 training images less the 5,000 of the validation split
    assert (plan.steps_per_epoch, plan.total, plan.steps_per_execution) == (367, 7340, 100)
    assert plan.next_stop(0) == 100 and plan.next_stop(350) == 367
    assert plan.evaluates_at(367) and not plan.evaluates_at(300)


def test_log_points_do_not_depend_on_chunks(mlflow_store, client):
    from rnnflow.runner import run

    path = ROOT / "specs" / "gru_forecast.yaml"
    result = run(path, ["train.iterations=50", "train.log_every=7", "train.steps_per_execution=20",
                        "data.train_windows=20", "model.cells[0].units=4", "evaluate.steps=[]",
                        "evaluate.every=25", "train.early_stopping=null", "tracking.experiment=chunks"])
    steps = [m.step for m in client.get_metric_history(result.run_id, "loss")]
    assert steps == [7, 14, 21, 28, 35, 42, 49, 50]
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")] == [25, 50]
