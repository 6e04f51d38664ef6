"""Bidirectional layers and `model.output: mean`, against NumPy references with fixed weights.

With lengths, the backward direction starts at each sequence's last valid step (TF1's
`bidirectional_dynamic_rnn`): tests/reference.py runs each row's valid steps reversed. Every
execution path is checked (Keras' fused layers, the cell loop, the unrolled loop, rnnflow's scan),
the scan loop's backward direction also against Keras' loop for values and gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compile_spec
from reference import (
    ATOL,
    RTOL,
    as_list,
    fix_weights,
    inline,
    randomize,
    reference_step,
    run_reference,
    run_reference_backward,
)

X = np.random.default_rng(11).normal(0.0, 1.0, (4, 5, 3)).round(3)  # batch 4, 5 steps, 3 features
LENGTHS = [5, 2, 3, 1]
PADDED = {"type": "padded", "inputs": np.where(np.arange(5)[None, :, None] < np.asarray(LENGTHS)[:, None, None],
                                               X, 0.0).tolist(), "lengths": LENGTHS}

# (cell, model settings, the execution path the planner must choose)
CASES = {
    "rnn-fused": ({"type": "rnn", "units": 3}, {}, "fused"),
    "lstm-forget_bias-0-fused": ({"type": "lstm", "units": 3, "forget_bias": 0.0}, {}, "fused"),
    "lstm-forget_bias-1-cell_loop": ({"type": "lstm", "units": 3}, {}, "cell loop"),
    "gru-reset_before-fused": ({"type": "gru", "units": 3, "reset_after": False}, {}, "fused"),
    "peephole_lstm-cell_loop": ({"type": "peephole_lstm", "units": 2}, {}, "cell loop"),
    "cifg_lstm-dropout-cell_loop": ({"type": "cifg_lstm", "units": 3,
                                     "wrappers": [{"type": "dropout", "keep_prob": 0.5}]}, {}, "cell loop"),
    "gru-unroll": ({"type": "gru", "units": 3}, {"unroll": True}, "fused"),
    "lstm-scan": ({"type": "lstm", "units": 3}, {"loop": "scan"}, "scan"),
    "gru-scan": ({"type": "gru", "units": 3}, {"loop": "scan"}, "scan"),
}


def _bidirectional(cell: dict, model: dict, data: dict, output: str = "sequence", merge_mode: str = "concat"):
    """A one-layer bidirectional model with fixed weights: (built, bundle, forward ref, backward ref)."""
    spec_cell = {**cell, "bidirectional": True, "merge_mode": merge_mode}
    built, bundle = compile_spec({"cells": [spec_cell], "projection": None, "output": output, **model}, data)
    layer = built.model.get_layer(f"{cell['type']}_0")
    import keras

    assert isinstance(layer, keras.layers.Bidirectional)
    assert built.plans[0].bidirectional and built.plans[0].merge_mode == merge_mode
    forward_weights = fix_weights(layer.forward_layer, seed=3, scale=0.4)
    backward_weights = fix_weights(layer.backward_layer, seed=4, scale=0.4)
    lengths = bundle.train.lengths
    x = bundle.train.x
    forward = run_reference(reference_step(cell, forward_weights), x, cell["units"], lengths=lengths)
    backward = run_reference_backward(reference_step(cell, backward_weights), x, cell["units"], lengths=lengths)
    return built, bundle, forward, backward


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "full"])
@pytest.mark.parametrize("case", list(CASES))
def test_bidirectional_sequence_matches_numpy(case, padded):
    """Every step's output is [forward, backward]; zeros past a length in both halves; the final
    states are the forward ones (last valid step) then the backward ones (after step 0)."""
    cell, model, path = CASES[case]
    built, bundle, (fw, fw_states), (bw, bw_states) = _bidirectional(cell, model, PADDED if padded else inline(X))
    assert built.plans[0].execution == path
    if path == "scan":
        from rnnflow.scan import ScanRNN

        layer = built.model.get_layer(f"{cell['type']}_0")
        assert type(layer.forward_layer) is ScanRNN and type(layer.backward_layer) is ScanRNN
    probe = built.probe_model(bundle.train.inputs(), training=False)
    outputs = np.asarray(probe["outputs"])
    np.testing.assert_allclose(outputs, np.concatenate([fw, bw], axis=-1), rtol=RTOL, atol=ATOL)
    if padded:
        for row, length in enumerate(LENGTHS):
            assert np.all(outputs[row, length:] == 0.0)
    states = as_list(probe["states"][f"{cell['type']}_0"])
    assert len(states) == len(fw_states) + len(bw_states)
    for got, want in zip(states, [*fw_states, *bw_states]):
        np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("merge_mode", ["sum", "ave", "mul"])
def test_merge_modes(merge_mode):
    cell, model, _ = CASES["gru-reset_before-fused"]
    built, bundle, (fw, _), (bw, _) = _bidirectional(cell, model, PADDED, merge_mode=merge_mode)
    expected = {"sum": fw + bw, "ave": (fw + bw) / 2, "mul": fw * bw}[merge_mode]
    got = np.asarray(built.probe_model(bundle.train.inputs(), training=False)["outputs"])
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["rnn-fused", "lstm-forget_bias-1-cell_loop", "lstm-scan"])
def test_bidirectional_last_is_the_forward_last_valid_step_and_the_backward_first(case):
    """output: last gives TF1's pair of final outputs: forward at the last valid step, backward
    at step 0 (where it ends)."""
    cell, model, _ = CASES[case]
    built, bundle, (fw, _), (bw, _) = _bidirectional(cell, model, PADDED, output="last")
    rows = np.arange(len(LENGTHS))
    expected = np.concatenate([fw[rows, np.asarray(LENGTHS) - 1], bw[:, 0]], axis=-1)
    np.testing.assert_allclose(np.asarray(built.model(bundle.train.inputs())), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "full"])
def test_output_mean_averages_the_valid_steps(padded):
    """model.output: mean is the mean over each sequence's valid steps (padding excluded), then
    the projection."""
    cell = {"type": "gru", "units": 3}
    data = PADDED if padded else inline(X)
    built, bundle = compile_spec({"cells": [cell], "projection": {"units": 2}, "output": "mean"}, data)
    weights = fix_weights(built.model.get_layer("gru_0"), seed=5, scale=0.4)
    dense = fix_weights(built.model.get_layer("projection"), seed=6)
    lengths = LENGTHS if padded else [X.shape[1]] * len(X)
    outputs, _ = run_reference(reference_step(cell, weights), bundle.train.x, 3, lengths=bundle.train.lengths)
    mean = np.stack([outputs[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
    expected = mean @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(np.asarray(built.model(bundle.train.inputs())), expected, rtol=RTOL, atol=ATOL)
    probe = built.probe_model(bundle.train.inputs(), training=False)
    np.testing.assert_allclose(np.asarray(probe["outputs"]), mean, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_scan_backward_direction_matches_keras_loop_values_and_gradients(cell_type):
    """rnnflow's scan loop run backwards (go_backwards) against Keras' loop, padded, under XLA."""
    from test_scan import _gradients

    cell = {"type": cell_type, "units": 3, "bidirectional": True}
    scan, bundle = compile_spec({"cells": [cell], "projection": None, "loop": "scan"}, PADDED)
    keras_loop, _ = compile_spec({"cells": [cell], "projection": None, "loop": "keras"}, PADDED)
    assert scan.plans[0].execution == "scan" and keras_loop.plans[0].execution != "scan"
    randomize(scan.model, seed=12, scale=0.5)
    keras_loop.model.set_weights(scan.model.get_weights())
    inputs = bundle.train.inputs()
    np.testing.assert_allclose(np.asarray(scan.model(inputs)), np.asarray(keras_loop.model(inputs)),
                               rtol=1e-5, atol=1e-6)
    loss_scan, grads_scan = _gradients(scan, inputs, jit=True)
    loss_keras, grads_keras = _gradients(keras_loop, inputs, jit=True)
    assert loss_scan == pytest.approx(loss_keras, rel=1e-5)
    assert len(grads_scan) == len(grads_keras) >= 4  # both directions' weights
    for got, want in zip(grads_scan, grads_keras):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_each_direction_draws_its_own_dropout_masks():
    import tensorflow as tf

    cell = {"type": "rnn", "units": 5, "activation": "linear", "bidirectional": True,
            "wrappers": [{"type": "dropout", "keep_prob": 0.5}]}
    built, bundle = compile_spec({"cells": [cell], "projection": None}, inline(np.ones((8, 4, 5))))
    layer = built.model.get_layer("rnn_0")
    seeds = [layer.forward_layer.cell.seed, layer.backward_layer.cell.seed]
    assert seeds[0] != seeds[1]
    for direction in (layer.forward_layer, layer.backward_layer):
        inner = direction.cell.cell
        inner.kernel.assign(np.eye(5, dtype=np.float32))
        inner.recurrent_kernel.assign(np.zeros((5, 5), np.float32))
    out = np.asarray(built.model(tf.constant(bundle.train.x, tf.float32), training=True))
    forward, backward = out[..., :5], out[..., 5:][:, ::-1]  # the backward half in its own order
    assert not np.array_equal(forward == 0, backward == 0)


def test_show_reports_bidirectional_layers_and_cudnn_for_both_directions(tmp_path):
    import yaml

    from rnnflow.show import describe
    from rnnflow.spec import spec_from_text

    spec = spec_from_text(yaml.safe_dump({
        "name": "bi", "data": PADDED, "train": None,
        "model": {"cells": [{"type": "lstm", "units": 3, "forget_bias": 0.0, "bidirectional": True},
                            {"type": "rnn", "units": 2, "bidirectional": True, "merge_mode": "sum"}],
                  "projection": None}}))
    text = describe(spec)
    assert "lstm_0: lstm, 3 units, tanh, bidirectional (concat), fused" in text
    assert "cuDNN on a GPU: yes (both directions)" in text
    assert "rnn_1: rnn, 2 units, tanh, bidirectional (sum), fused" in text
    assert "cuDNN on a GPU: no (both directions) - there is no cuDNN kernel for 'rnn' cells" in text


def test_a_per_step_projection_cannot_wrap_a_bidirectional_top_layer():
    import yaml

    from rnnflow.errors import SpecError
    from rnnflow.spec import spec_from_text

    with pytest.raises(SpecError, match="model.projection.mode: a per_step projection runs inside one direction"):
        spec_from_text(yaml.safe_dump({
            "name": "bi", "data": inline(X), "train": None,
            "model": {"cells": [{"type": "gru", "units": 3, "bidirectional": True}],
                      "projection": {"units": 2, "mode": "per_step"}}}))


def test_bidirectional_model_saves_and_loads(tmp_path):
    import keras

    cell = {"type": "lstm", "units": 3, "bidirectional": True}
    built, bundle = compile_spec({"cells": [cell], "projection": {"units": 2}, "output": "mean", "loop": "scan"},
                                 PADDED)
    randomize(built.model, seed=9)
    path = tmp_path / "bi.keras"
    built.model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = bundle.train.inputs()
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(built.model(inputs)), rtol=1e-6, atol=1e-7)
