"""Every cell type against the NumPy reference of its equations (tests/reference.py), fixed weights.

Also: the seed's two steps by hand, the coupled gate measured from the cell's memory, static vs
dynamic unrolling, padded sequences (TF1 dynamic_rnn semantics) and saving every custom cell.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED_STEPS, compile_spec
from reference import (
    ATOL,
    RTOL,
    as_list,
    fix_weights,
    inline,
    plain,
    randomize,
    reference_step,
    run_reference,
    sigmoid,
    split,
)

X = np.random.default_rng(7).normal(0.0, 1.0, (3, 4, 3)).round(3)  # batch 3, 4 steps, 3 features
SEED_X = np.transpose(np.asarray(SEED_STEPS, np.float64), (1, 0, 2))  # (batch 4, time 2, features 3)

CELLS = {
    "rnn-tanh": {"type": "rnn", "units": 5, "activation": "tanh"},
    "rnn-relu": {"type": "rnn", "units": 5, "activation": "relu"},
    "lstm-forget_bias-default": {"type": "lstm", "units": 4, "activation": "relu"},
    "lstm-forget_bias-2.5": {"type": "lstm", "units": 4, "activation": "relu", "forget_bias": 2.5},
    "lstm-forget_bias-0-keras": {"type": "lstm", "units": 4, "activation": "relu", "forget_bias": 0.0},
    "peephole_lstm": {"type": "peephole_lstm", "units": 4},
    "peephole_lstm-forget_bias-0.5": {"type": "peephole_lstm", "units": 3, "forget_bias": 0.5},
    "gru-reset_before": {"type": "gru", "units": 4, "reset_after": False},
    "gru-reset_after": {"type": "gru", "units": 4, "reset_after": True},
    "cifg_lstm": {"type": "cifg_lstm", "units": 4},
}


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_matches_numpy_reference(name):
    """Outputs at every step and the final states equal the NumPy equations of the cell."""
    import keras

    from rnnflow.cells import CIFGLSTMCell, ForgetBiasLSTMCell, PeepholeLSTMCell

    cell = CELLS[name]
    built, data = compile_spec({"cells": [cell], "projection": None}, inline(X))
    layer_name = f"{cell['type']}_0"
    layer = built.model.get_layer(layer_name)
    # The compiled layer is the implementation the test claims to check.
    expected_cell = {
        "rnn": keras.layers.SimpleRNNCell,
        "lstm": ForgetBiasLSTMCell if cell.get("forget_bias", 1.0) != 0 else keras.layers.LSTMCell,
        "peephole_lstm": PeepholeLSTMCell,
        "gru": keras.layers.GRUCell,
        "cifg_lstm": CIFGLSTMCell,
    }[cell["type"]]
    assert type(layer.cell) is expected_cell
    if name == "lstm-forget_bias-0-keras":
        assert type(layer) is keras.layers.LSTM  # Keras' own layer, not RNN(ForgetBiasLSTMCell)
    if cell["type"] == "gru":
        assert layer.cell.reset_after is cell["reset_after"]
        assert tuple(layer.cell.bias.shape) == ((2, 12) if cell["reset_after"] else (12,))

    weights = fix_weights(layer, seed=sum(map(ord, name)))
    expected, expected_states = run_reference(reference_step(cell, weights), data.train.x, cell["units"])
    probe = built.probe_model(data.train.x, training=False)
    np.testing.assert_allclose(np.asarray(built.model(data.train.x)), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(probe["outputs"]), expected, rtol=RTOL, atol=ATOL)
    states = as_list(probe["states"][layer_name])
    assert len(states) == len(expected_states)
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


GRU_RESET_BEFORE = {"type": "gru", "units": 4, "reset_after": False}
GRU_PATHS = {
    # Keras' GRU layer (rnnflow.cells.factory.fused_layer).
    "fused": ({"cells": [GRU_RESET_BEFORE], "projection": None}, "fused"),
    # A wrapper inside the step: Keras' RNN stepping the cell of rnnflow.cells.factory.keras_cell.
    "dropout": ({"cells": [{**GRU_RESET_BEFORE, "wrappers": [{"type": "dropout", "keep_prob": 1.0}]}],
                 "projection": None}, "cell loop"),
    "per_step": ({"cells": [GRU_RESET_BEFORE], "projection": {"units": 2, "mode": "per_step"}}, "cell loop"),
}


@pytest.mark.parametrize("path", list(GRU_PATHS))
def test_gru_reset_before_on_every_execution_path(path):
    """`reset_after: false` (TF1's GRUCell) is the cell that runs, fused or stepped in Keras' loop."""
    import keras

    model, execution = GRU_PATHS[path]
    built, data = compile_spec(model, inline(X))
    assert built.plans[0].execution == execution
    layer = built.model.get_layer("gru_0")
    cell = layer.cell
    while not isinstance(cell, keras.layers.GRUCell):  # inside the dropout or projection wrapper
        cell = cell.cell
    assert cell.reset_after is False
    assert tuple(cell.bias.shape) == (12,)  # one bias vector, not (input, recurrent) rows

    weights = fix_weights(cell, seed=31)
    expected, expected_states = run_reference(reference_step(GRU_RESET_BEFORE, weights), data.train.x, 4)
    want = expected
    if path == "per_step":
        rng = np.random.default_rng(32)  # the OutputProjectionWrapper's dense layer
        kernel, bias = rng.uniform(-0.5, 0.5, (4, 2)), rng.uniform(-0.5, 0.5, 2)
        layer.cell.kernel.assign(kernel.astype(np.float32))
        layer.cell.bias.assign(bias.astype(np.float32))
        want = expected @ kernel.astype(np.float32) + bias.astype(np.float32)
    # keep_prob 1.0 drops nothing: training=True is deterministic and still goes through the wrapper.
    for training in (False, True):
        probe = built.probe_model(data.train.x, training=training)
        np.testing.assert_allclose(np.asarray(probe["outputs"]), want, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(np.asarray(probe["states"]["gru_0"]), expected_states[0], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("implementation", [1, 2])
def test_forget_bias_in_both_keras_lstm_code_paths(implementation):
    """Keras' LSTMCell has split (1) and fused (2) gate code; the forget bias goes into both."""
    from reference import lstm_step

    from rnnflow.cells import ForgetBiasLSTMCell

    cell = ForgetBiasLSTMCell(4, forget_bias=1.5, implementation=implementation)
    cell.build((None, 3))
    w = fix_weights(cell, seed=9)
    h0 = np.random.default_rng(1).uniform(-1, 1, (3, 4))
    c0 = np.random.default_rng(2).uniform(-1, 1, (3, 4))
    x = X[:, 0]
    h, (_, c) = cell(x.astype(np.float32), [h0.astype(np.float32), c0.astype(np.float32)])
    step, _ = lstm_step(w, np.tanh, 1.5)
    want_h, (_, want_c) = step(x, (h0.astype(np.float32), c0.astype(np.float32)))
    np.testing.assert_allclose(np.asarray(h), want_h, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(c), want_c, rtol=RTOL, atol=ATOL)


def test_seed_two_time_steps_by_hand():
    """The seed's hand-built RNN: Y0 = tanh(X0 Wx + b), Y1 = tanh(Y0 Wy + X1 Wx + b)."""
    built, data = compile_spec(
        {"cells": [{"type": "rnn", "units": 5, "activation": "tanh"}], "projection": None},
        {"type": "inline", "inputs": SEED_STEPS, "time_major": True},
    )
    rng = np.random.default_rng(42)
    wx = rng.standard_normal((3, 5)).astype(np.float32)
    wy = rng.standard_normal((5, 5)).astype(np.float32)
    b = (0.1 * rng.standard_normal(5)).astype(np.float32)
    layer = built.model.get_layer("rnn_0")
    layer.cell.kernel.assign(wx)
    layer.cell.recurrent_kernel.assign(wy)
    layer.cell.bias.assign(b)

    x0, x1 = (np.asarray(s, np.float64) for s in SEED_STEPS)
    y0 = np.tanh(x0 @ wx + b)
    y1 = np.tanh(y0 @ wy + x1 @ wx + b)
    assert data.train.x.shape == (4, 2, 3)  # time-major input, batch-major model
    out = np.asarray(built.model(data.train.x))
    np.testing.assert_allclose(out[:, 0], y0, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out[:, 1], y1, rtol=RTOL, atol=ATOL)


def test_cifg_forget_gate_is_one_minus_input_gate():
    """Measured from the cell's memory: f = (c(t) with c(t-1)=1) - (c(t) with c(t-1)=0) = 1 - i."""
    from rnnflow.cells import CIFGLSTMCell

    units = 4
    cell = CIFGLSTMCell(units)
    cell.build((None, 3))
    w = fix_weights(cell, seed=3)
    x = X[:, 0].astype(np.float32)
    h0 = np.asarray(np.random.default_rng(4).uniform(-1, 1, (3, units)), np.float32)
    zeros, ones = np.zeros((3, units), np.float32), np.ones((3, units), np.float32)
    _, (_, c_from_0) = cell(x, [h0, zeros])
    _, (_, c_from_1) = cell(x, [h0, ones])
    forget = np.asarray(c_from_1) - np.asarray(c_from_0)  # c = f * c(t-1) + i * g
    z_i, z_c, _ = split(x.astype(np.float64) @ w["kernel"] + h0 @ w["recurrent_kernel"] + w["bias"], 3)
    input_gate = np.asarray(c_from_0) / np.tanh(z_c)  # with c(t-1) = 0, c = i * g
    np.testing.assert_allclose(input_gate, sigmoid(z_i), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(forget, 1.0 - input_gate, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(forget, 1.0 - sigmoid(z_i), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cell", [CELLS["rnn-tanh"], CELLS["lstm-forget_bias-default"]], ids=["rnn", "lstm"])
def test_static_and_dynamic_unrolling_agree(cell):
    """`model.unroll: true` (TF1 static_rnn) and the dynamic loop give the same outputs."""
    dynamic, data = compile_spec({"cells": [cell], "projection": None, "unroll": False}, inline(X))
    static, _ = compile_spec({"cells": [cell], "projection": None, "unroll": True}, inline(X))
    name = f"{cell['type']}_0"
    assert static.model.get_layer(name).unroll and not dynamic.model.get_layer(name).unroll
    weights = fix_weights(dynamic.model.get_layer(name), seed=5)
    static.model.set_weights(dynamic.model.get_weights())
    out_dynamic = np.asarray(dynamic.model(data.train.x))
    out_static = np.asarray(static.model(data.train.x))
    np.testing.assert_allclose(out_static, out_dynamic, rtol=1e-6, atol=1e-7)
    expected, _ = run_reference(reference_step(cell, weights), data.train.x, cell["units"])
    np.testing.assert_allclose(out_static, expected, rtol=RTOL, atol=ATOL)


LENGTHS = [2, 1, 2, 2]
PADDED = {"type": "padded", "inputs": SEED_X.tolist(), "lengths": LENGTHS}
MASKED_CASES = {
    "rnn": ({"type": "rnn", "units": 5}, False),
    "rnn-unroll": ({"type": "rnn", "units": 5}, True),
    "lstm": ({"type": "lstm", "units": 4}, False),
    "lstm-unroll": ({"type": "lstm", "units": 4}, True),
    "lstm-keras": ({"type": "lstm", "units": 4, "forget_bias": 0.0}, False),
    "gru": ({"type": "gru", "units": 4}, False),
    "gru-reset_before": ({"type": "gru", "units": 4, "reset_after": False}, False),
    "peephole_lstm": ({"type": "peephole_lstm", "units": 3}, False),
    "cifg_lstm": ({"type": "cifg_lstm", "units": 3}, False),
}


@pytest.mark.parametrize("name", list(MASKED_CASES))
def test_variable_length_outputs_zero_and_final_state_of_last_valid_step(name):
    """Padded inputs (lengths 2,1,2,2): TF1 dynamic_rnn(sequence_length=...) semantics."""
    cell, unroll = MASKED_CASES[name]
    built, data = compile_spec({"cells": [cell], "projection": None, "unroll": unroll}, PADDED)
    assert built.masked
    layer_name = f"{cell['type']}_0"
    weights = fix_weights(built.model.get_layer(layer_name), seed=11, scale=0.2)
    probe = built.probe_model(data.train.inputs(), training=False)
    outputs = np.asarray(probe["outputs"])
    # Exactly zero past each length, not merely small.
    for row, length in enumerate(LENGTHS):
        assert np.all(outputs[row, length:] == 0.0), (row, outputs[row])
        assert np.all(outputs[row, :length] != 0.0)
    expected, expected_states = run_reference(
        reference_step(cell, weights), data.train.x, cell["units"], lengths=LENGTHS
    )
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    states = as_list(probe["states"][layer_name])
    assert len(states) == len(expected_states)  # h (and c for the LSTMs)
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)
    # Row 1 stopped after one step: its final states are its step-0 states.
    step, n_states = reference_step(cell, weights)
    _, first = step(SEED_X[1:2, 0], tuple(np.zeros((1, cell["units"])) for _ in range(n_states)))
    for got, want in zip(states, first):
        np.testing.assert_allclose(np.asarray(got)[1], want[0], rtol=RTOL, atol=ATOL)


LAST_CASES = {
    "rnn": ({"type": "rnn", "units": 5}, False),
    "rnn-unroll": ({"type": "rnn", "units": 5}, True),
    "lstm": ({"type": "lstm", "units": 4}, False),
    "lstm-keras": ({"type": "lstm", "units": 4, "forget_bias": 0.0}, False),
    "gru": ({"type": "gru", "units": 4}, False),
    "cifg_lstm": ({"type": "cifg_lstm", "units": 3}, True),
}


@pytest.mark.parametrize("name", list(LAST_CASES))
def test_variable_length_last_output_is_the_last_valid_steps(name):
    """`model.output: last` on padded inputs: each row's output at its own last valid step.

    TF1 reads it from the final state of dynamic_rnn(sequence_length=...); it is not the (zero)
    output at the padded last position.
    """
    cell, unroll = LAST_CASES[name]
    built, data = compile_spec({"cells": [cell], "projection": None, "output": "last", "unroll": unroll},
                                  PADDED)
    layer_name = f"{cell['type']}_0"
    weights = fix_weights(built.model.get_layer(layer_name), seed=17, scale=0.2)
    expected, expected_states = run_reference(
        reference_step(cell, weights), data.train.x, cell["units"], lengths=LENGTHS
    )
    last = expected[np.arange(4), np.asarray(LENGTHS) - 1]
    out = np.asarray(built.model(data.train.inputs()))
    assert out.shape == (4, cell["units"])
    np.testing.assert_allclose(out, last, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out, expected_states[0], rtol=RTOL, atol=ATOL)  # = the final h
    states = as_list(built.probe_model(data.train.inputs(), training=False)["states"][layer_name])
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


def test_keras_without_zero_output_for_mask_repeats_the_previous_output():
    """Why the compiler sets zero_output_for_mask: Keras' default repeats the last valid output."""
    import keras

    built, data = compile_spec({"cells": [{"type": "rnn", "units": 5}], "projection": None}, PADDED)
    ours = built.model.get_layer("rnn_0")
    fix_weights(ours, seed=11, scale=0.2)
    assert ours.zero_output_for_mask is True
    plain = keras.layers.SimpleRNN(5, return_sequences=True)  # zero_output_for_mask=False by default
    plain.build((None, 2, 3))
    plain.set_weights(ours.get_weights())
    mask = np.arange(2)[None, :] < np.asarray(LENGTHS)[:, None]
    repeated = np.asarray(plain(data.train.x, mask=mask))
    zeroed = np.asarray(built.model(data.train.inputs()))
    np.testing.assert_allclose(repeated[1, 0], zeroed[1, 0], rtol=RTOL, atol=ATOL)
    assert np.all(repeated[1, 1] == repeated[1, 0]) and np.any(repeated[1, 1] != 0.0)
    assert np.all(zeroed[1, 1] == 0.0)
    np.testing.assert_allclose(repeated[[0, 2, 3]], zeroed[[0, 2, 3]], rtol=RTOL, atol=ATOL)


CELL_CLASSES = {
    "ForgetBiasLSTMCell": {"units": 3, "forget_bias": 0.25, "activation": "relu"},
    "PeepholeLSTMCell": {"units": 3, "forget_bias": 0.5, "recurrent_activation": "hard_sigmoid"},
    "CIFGLSTMCell": {"units": 3, "activation": "relu", "use_bias": False},
}


@pytest.mark.parametrize("class_name", list(CELL_CLASSES))
def test_cell_config_round_trip(class_name):
    """get_config/from_config (and Keras serialization) rebuild the same cell, computing the same."""
    import keras

    import rnnflow.cells

    cls = getattr(rnnflow.cells, class_name)
    cell = cls(**CELL_CLASSES[class_name], name="c")
    cell.build((None, 3))
    fix_weights(cell, seed=1)
    config = cell.get_config()
    for key, value in CELL_CLASSES[class_name].items():
        assert config[key] == value, key
    clone = cls.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cell))
    assert type(revived) is cls and revived.get_config() == config
    x = X[:, 0].astype(np.float32)
    states = [np.full((3, 3), 0.3, np.float32), np.full((3, 3), -0.2, np.float32)]
    want_h, want_states = cell(x, states)
    for other in (clone, revived):
        if not other.built:  # deserialization builds from the serialized build_config
            other.build((None, 3))
        other.set_weights(cell.get_weights())
        got_h, got_states = other(x, states)
        np.testing.assert_array_equal(np.asarray(got_h), np.asarray(want_h))
        for got, want in zip(got_states, want_states):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


SAVED_CELLS = {
    "lstm": {"type": "lstm", "units": 3, "forget_bias": 2.5},  # not the default: it must be saved
    "peephole_lstm": {"type": "peephole_lstm", "units": 3, "forget_bias": -0.5},
    "cifg_lstm": {"type": "cifg_lstm", "units": 3, "activation": "relu"},
}


@pytest.mark.parametrize("cell_type", list(SAVED_CELLS))
def test_saved_model_with_custom_cell_loads_back(cell_type, tmp_path):
    """A `.keras` file of a compiled model with each custom cell: same predictions and config."""
    import keras

    import rnnflow.cells

    built, data = compile_spec({"cells": [SAVED_CELLS[cell_type]], "projection": {"units": 2}}, inline(X))
    randomize(built.model, seed=2)
    cls = {"lstm": rnnflow.cells.ForgetBiasLSTMCell, "peephole_lstm": rnnflow.cells.PeepholeLSTMCell,
           "cifg_lstm": rnnflow.cells.CIFGLSTMCell}[cell_type]
    assert type(built.model.get_layer(f"{cell_type}_0").cell) is cls
    path = tmp_path / "m.keras"
    built.model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer(f"{cell_type}_0").cell) is cls
    assert plain(loaded.get_config()) == plain(built.model.get_config())
    np.testing.assert_array_equal(
        np.asarray(loaded(data.train.x, training=False)), np.asarray(built.model(data.train.x, training=False))
    )
