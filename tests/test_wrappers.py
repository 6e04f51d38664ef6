"""The cell and layer wrappers, with fixed weights: projection, dropout, devices, saving.

NumPy references come from tests/reference.py. The device test that needs several logical CPUs
runs in a subprocess, because logical devices must be configured before TensorFlow initializes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, compile_spec
from reference import (
    ATOL,
    RTOL,
    as_list,
    fix_weights,
    inline,
    plain,
    reference_step,
    run_reference,
)

X = np.random.default_rng(8).normal(0.0, 1.0, (3, 4, 3)).round(3)  # batch 3, 4 steps, 3 features
ONES = np.ones((64, 4, 5))  # 1280 input values to count dropped ones in


def walk(layer):
    """A layer and everything inside it: sublayers, wrapped layers, cells and wrapped cells."""
    yield layer
    for child in getattr(layer, "layers", []):
        yield from walk(child)
    for attr in ("layer", "cell"):
        child = getattr(layer, attr, None)
        if child is not None:
            yield from walk(child)


# ---------------------------------------------------------------------------------- projection


LENGTHS = [4, 1, 3]
PROJECTION_CASES = {
    "rnn-sequence": ({"type": "rnn", "units": 5}, "sequence", None),
    "rnn-last": ({"type": "rnn", "units": 5}, "last", None),
    "lstm-2-layers-sequence": ({"type": "lstm", "units": 4, "layers": 2}, "sequence", None),
    # Padded: the last output is each row's last valid step's (with sequence outputs the two modes
    # differ past a length: per_step gives 0 there, stacked projects the 0 to the bias).
    "gru-last-padded": ({"type": "gru", "units": 4}, "last", LENGTHS),
}


@pytest.mark.parametrize("case", list(PROJECTION_CASES))
def test_per_step_projection_equals_stacked_projection(case):
    """OutputProjectionWrapper inside the loop == one Dense over all steps, given the same weights."""
    from rnnflow.wrappers import OutputProjectionWrapper

    cell, output, lengths = PROJECTION_CASES[case]
    model = {"cells": [cell], "output": output}
    source = inline(X) if lengths is None else {"type": "padded", "inputs": X.tolist(), "lengths": lengths}
    stacked, data = compile_spec({**model, "projection": {"units": 2, "mode": "stacked"}}, source)
    per_step, _ = compile_spec({**model, "projection": {"units": 2, "mode": "per_step"}}, source)
    layers = cell.get("layers", 1)
    top = f"{cell['type']}_{layers - 1}"
    assert "projection" not in [layer.name for layer in per_step.model.layers]  # it is inside the loop
    wrapped = per_step.model.get_layer(top).cell
    assert isinstance(wrapped, OutputProjectionWrapper)

    weights = []
    for i in range(layers):
        name = f"{cell['type']}_{i}"
        weights.append(fix_weights(stacked.model.get_layer(name), seed=20 + i))
        target = per_step.model.get_layer(name).cell
        target = target.cell if isinstance(target, OutputProjectionWrapper) else target
        assert not isinstance(target, OutputProjectionWrapper)
        target.set_weights(stacked.model.get_layer(name).cell.get_weights())
    dense = stacked.model.get_layer("projection")
    projection = fix_weights(dense, seed=30)
    wrapped.kernel.assign(dense.kernel)
    wrapped.bias.assign(dense.bias)

    inputs = data.train.inputs()
    out_stacked = np.asarray(stacked.model(inputs))
    out_per_step = np.asarray(per_step.model(inputs))
    np.testing.assert_allclose(out_per_step, out_stacked, rtol=1e-6, atol=1e-7)

    hidden = data.train.x
    for w in weights:
        hidden, _ = run_reference(reference_step(cell, w), hidden, cell["units"], lengths=lengths)
    expected = hidden @ projection["kernel"] + projection["bias"]
    if output == "last":
        last = np.full(len(X), X.shape[1]) if lengths is None else np.asarray(lengths)
        expected = expected[np.arange(len(X)), last - 1]
    assert out_per_step.shape == expected.shape
    np.testing.assert_allclose(out_per_step, expected, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------- dropout


def identity_rnn(dropout: dict, unroll: bool):
    """A linear rnn cell with identity input weights and no recurrence: its output is its input.

    Through it the dropout masks are visible: output(t) = dropped(x(t)) (or dropped(h(t))).
    """
    cell = {"type": "rnn", "units": 5, "activation": "linear", "wrappers": [{"type": "dropout", **dropout}]}
    built, data = compile_spec({"cells": [cell], "projection": None, "unroll": unroll}, inline(ONES))
    inner = built.model.get_layer("rnn_0").cell.cell
    inner.kernel.assign(np.eye(5, dtype=np.float32))
    inner.recurrent_kernel.assign(np.zeros((5, 5), np.float32))
    inner.bias.assign(np.zeros(5, np.float32))
    return built, data


@pytest.mark.parametrize("unroll", [False, True], ids=["dynamic", "unroll"])
@pytest.mark.parametrize("where", ["input", "output"])
def test_dropout_drops_about_the_rate_with_a_fresh_mask_each_step(where, unroll):
    """keep 0.75: a quarter of the values become 0, the rest 1/0.75; masks differ by step and call."""
    import tensorflow as tf

    key = {"input": "keep_prob", "output": "output_keep_prob"}[where]
    built, data = identity_rnn({key: 0.75}, unroll)
    x = data.train.x
    np.testing.assert_array_equal(np.asarray(built.model(x)), x)  # inference: nothing dropped

    eager = lambda v: built.model(v, training=True)  # noqa: E731
    graph = tf.function(eager)  # the way fit() runs it: inside a traced while loop
    for run in (eager, graph):
        first, second = np.asarray(run(x)), np.asarray(run(x))
        for out in (first, second):
            dropped = out == 0.0
            np.testing.assert_allclose(out[~dropped], 1.0 / 0.75, rtol=1e-6)
            assert abs(dropped.mean() - 0.25) < 0.05, dropped.mean()
            # A fresh mask at every step (TF1), not one mask for the whole sequence.
            assert all(np.any(dropped[:, t] != dropped[:, 0]) for t in range(1, 4))
        assert np.any(first != second)


@pytest.fixture(scope="module")
def lstm_pair():
    """The same LSTM with and without a dropout wrapper, per unroll mode, sharing fixed weights."""
    cache = {}

    def get(unroll: bool, dropout: dict):
        key = (unroll, json.dumps(dropout, sort_keys=True))
        if key not in cache:
            base = {"type": "lstm", "units": 4}
            plain_model, data = compile_spec({"cells": [base], "projection": None, "unroll": unroll}, inline(X))
            wrapped_cell = {**base, "wrappers": [{"type": "dropout", **dropout}]}
            wrapped, _ = compile_spec({"cells": [wrapped_cell], "projection": None, "unroll": unroll}, inline(X))
            weights = fix_weights(plain_model.model.get_layer("lstm_0"), seed=12)
            inner = wrapped.model.get_layer("lstm_0").cell.cell  # the cell inside the DropoutWrapper
            inner.set_weights(plain_model.model.get_layer("lstm_0").cell.get_weights())
            cache[key] = (plain_model, wrapped, data, weights)
        return cache[key]

    return get


ALL_HALF = {"keep_prob": 0.5, "state_keep_prob": 0.5, "output_keep_prob": 0.5}


@pytest.mark.parametrize("unroll", [False, True], ids=["dynamic", "unroll"])
def test_dropout_inactive_at_inference(lstm_pair, unroll):
    """Without training: predictions repeat and equal the unwrapped model (and the NumPy LSTM)."""
    from rnnflow.wrappers import DropoutWrapper

    plain_model, wrapped, data, weights = lstm_pair(unroll, ALL_HALF)
    assert isinstance(wrapped.model.get_layer("lstm_0").cell, DropoutWrapper)
    x = data.train.x
    first = np.asarray(wrapped.model(x))
    np.testing.assert_array_equal(np.asarray(wrapped.model(x, training=False)), first)
    np.testing.assert_array_equal(wrapped.predict(data.test), first)
    np.testing.assert_allclose(first, np.asarray(plain_model.model(x)), rtol=1e-6, atol=1e-7)
    expected, _ = run_reference(reference_step({"type": "lstm"}, weights), x, 4)
    np.testing.assert_allclose(first, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("unroll", [False, True], ids=["dynamic", "unroll"])
def test_dropout_active_in_training(lstm_pair, unroll):
    """training=True: two calls differ from each other and from inference."""
    _, wrapped, data, _ = lstm_pair(unroll, ALL_HALF)
    x = data.train.x
    inference = np.asarray(wrapped.model(x))
    first = np.asarray(wrapped.model(x, training=True))
    second = np.asarray(wrapped.model(x, training=True))
    assert np.any(first != second)
    assert np.any(first != inference) and np.any(second != inference)


@pytest.mark.parametrize("unroll", [False, True], ids=["dynamic", "unroll"])
def test_keep_prob_one_is_no_dropout_even_in_training(lstm_pair, unroll):
    """keep_prob = state_keep_prob = output_keep_prob = 1.0: training changes nothing."""
    plain_model, wrapped, data, weights = lstm_pair(
        unroll, {"keep_prob": 1.0, "state_keep_prob": 1.0, "output_keep_prob": 1.0}
    )
    x = data.train.x
    out = np.asarray(wrapped.model(x, training=True))
    np.testing.assert_array_equal(out, np.asarray(wrapped.model(x, training=True)))
    np.testing.assert_allclose(out, np.asarray(plain_model.model(x, training=True)), rtol=1e-6, atol=1e-7)
    expected, _ = run_reference(reference_step({"type": "lstm"}, weights), x, 4)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("unroll", [False, True], ids=["dynamic", "unroll"])
def test_state_dropout_keeps_the_lstm_memory_cell(unroll):
    """state_keep_prob 0.5 on one step: output and c are the NumPy values; only the state h is dropped."""
    x = np.random.default_rng(13).normal(0.0, 1.0, (32, 1, 3)).round(3)
    cell = {"type": "lstm", "units": 4, "wrappers": [{"type": "dropout", "state_keep_prob": 0.5}]}
    built, data = compile_spec({"cells": [cell], "projection": None, "unroll": unroll}, inline(x))
    layer = built.model.get_layer("lstm_0")
    weights = fix_weights(layer, seed=14)
    expected, (want_h, want_c) = run_reference(reference_step({"type": "lstm"}, weights), data.train.x, 4)
    probe = built.probe_model(data.train.x, training=True)
    h, c = as_list(probe["states"]["lstm_0"])
    h, c = np.asarray(h), np.asarray(c)
    np.testing.assert_allclose(np.asarray(probe["outputs"]), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c, want_c, rtol=RTOL, atol=ATOL)  # c untouched
    dropped = h == 0.0
    assert 0.3 < dropped.mean() < 0.7, dropped.mean()
    np.testing.assert_allclose(h[~dropped], want_h[~dropped] / 0.5, rtol=RTOL, atol=ATOL)


def test_dropout_wrapper_on_a_tiny_custom_cell():
    """Directly on a two-state pass-through cell: input and h are dropped, the second state (c) never."""
    import keras

    from rnnflow.wrappers import DropoutWrapper

    class PassThrough(keras.layers.Layer):
        state_size = [6, 6]
        output_size = 6

        def call(self, inputs, states, training=False):
            return inputs, [inputs, inputs]

    x = np.ones((200, 6), np.float32)
    zeros = [np.zeros((200, 6), np.float32)] * 2
    wrapper = DropoutWrapper(PassThrough(), input_rate=0.0, state_rate=0.4, seed=3)
    out, (h, c) = wrapper(x, zeros, training=True)
    np.testing.assert_array_equal(np.asarray(out), x)
    np.testing.assert_array_equal(np.asarray(c), x)
    h = np.asarray(h)
    assert abs((h == 0).mean() - 0.4) < 0.05
    np.testing.assert_allclose(h[h != 0], 1.0 / 0.6, rtol=1e-6)

    wrapper = DropoutWrapper(PassThrough(), input_rate=0.3, seed=3)
    out, (h, c) = wrapper(x, zeros, training=True)
    out = np.asarray(out)
    assert abs((out == 0).mean() - 0.3) < 0.05
    np.testing.assert_array_equal(np.asarray(h), out)  # the cell saw the dropped input
    np.testing.assert_array_equal(np.asarray(c), out)
    out_inference, _ = wrapper(x, zeros, training=False)
    np.testing.assert_array_equal(np.asarray(out_inference), x)


# ------------------------------------------------------------------------------------- devices


DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, re, sys, tempfile
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 3)
    sys.path.insert(0, sys.argv[1])
    import keras
    import numpy as np
    from conftest import compile_spec
    from reference import fix_weights

    DEVICES = {"type": "device", "device": ["/cpu:0", "/cpu:1", "/cpu:2"], "strict": True}
    x = np.random.default_rng(0).normal(size=(2, 3, 3)).round(3)
    scope = re.compile(r"(^|/)((rnn|lstm)_[0-9])(_[0-9]+)?/")


    def collect(ops, into):
        for op in ops:
            found = scope.search(op.name)
            if found:
                into.setdefault(found.group(2), []).append((op.name, op.type, op.device))


    def report(cell, training):
        built, data = compile_spec({"cells": [cell], "projection": None},
                                      {"type": "inline", "inputs": x.tolist()})
        out = {"plans": [p.device for p in built.plans], "wrappers": [], "variables": {}, "ops": {},
               "loop_ops": {}, "weights": {}, "loaded_variables": {}}
        for i in range(3):
            layer = built.model.get_layer(f"{cell['type']}_{i}")
            out["wrappers"].append(type(layer).__name__)
            # All variables, the dropout seed states included, not only the trainable weights.
            out["variables"][layer.name] = [(v.path, v.value.device) for v in layer.variables]
            out["weights"][layer.name] = {k: v.tolist() for k, v in fix_weights(layer, seed=i).items()}
        out["outputs"] = np.asarray(built.model(data.train.x)).tolist()
        with tempfile.TemporaryDirectory() as folder:
            built.model.save(folder + "/m.keras")
            loaded = keras.saving.load_model(folder + "/m.keras")
        for i in range(3):
            layer = loaded.get_layer(f"{cell['type']}_{i}")
            out["loaded_variables"][layer.name] = [(v.path, v.value.device) for v in layer.variables]
        function = tf.function(lambda v: built.model(v, training=training))
        graph = function.get_concrete_function(tf.constant(data.train.x)).graph
        collect(graph.get_operations(), out["ops"])
        for body in graph._functions.values():  # the while loops' bodies: the per-step ops
            collect(body.graph.get_operations(), out["loop_ops"])
        return out


    print(json.dumps({
        "rnn": report({"type": "rnn", "units": 4, "layers": 3, "wrappers": [DEVICES]}, training=False),
        "lstm-dropout": report({"type": "lstm", "units": 4, "layers": 3,
                                "wrappers": [{"type": "dropout", "keep_prob": 0.8, "state_keep_prob": 0.8},
                                             DEVICES]}, training=True),
    }))
    """
)


@pytest.fixture(scope="module")
def device_report():
    """What the 3-logical-CPU subprocess saw: placement of every variable and op, and the outputs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", DEVICE_SCRIPT, str(ROOT / "tests")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["rnn", "lstm-dropout"])
def test_device_wrapper_places_variables_and_ops_on_each_layer_device(device_report, case):
    """3 logical CPUs, `device: [/cpu:0, /cpu:1, /cpu:2]` over 3 layers, strict: each on its own."""
    report = device_report[case]
    kind = case.split("-")[0]
    assert report["plans"] == ["/cpu:0", "/cpu:1", "/cpu:2"]
    assert report["wrappers"] == ["DeviceWrapper"] * 3
    for i in range(3):
        name = f"{kind}_{i}"
        for where in ("variables", "loaded_variables"):  # as built, and loaded back from .keras
            variables = report[where][name]
            assert len(variables) >= 3
            for path, device in variables:
                assert device.endswith(f"CPU:{i}"), (where, path, device)
        for where in ("ops", "loop_ops"):
            ops = report[where][name]
            # Variable reads carry no device of their own: they run where the variable lives.
            placed = [(n, t, d) for n, t, d in ops if t not in ("ReadVariableOp", "Placeholder")]
            assert len(placed) > 10
            for op_name, op_type, device in placed:
                assert device.endswith(f"CPU:{i}"), (where, op_name, op_type, device)
        types = {t for _, t, _ in report["ops"][name]} | {t for _, t, _ in report["loop_ops"][name]}
        assert {"While", "MatMul", "Tanh"} <= types
        if case == "lstm-dropout":
            assert "StatelessRandomUniformV2" in types  # the dropout masks, drawn on the device too
    # The placed model still computes the stacked network.
    hidden = np.asarray(X_DEVICES)
    for i in range(3):
        weights = {k: np.asarray(v) for k, v in report["weights"][f"{kind}_{i}"].items()}
        hidden, _ = run_reference(reference_step({"type": kind}, weights), hidden, 4)
    np.testing.assert_allclose(np.asarray(report["outputs"]), hidden, rtol=RTOL, atol=ATOL)


X_DEVICES = np.random.default_rng(0).normal(size=(2, 3, 3)).round(3)  # as in DEVICE_SCRIPT


@pytest.fixture
def rnnflow_warnings(caplog):
    """Records of the "rnnflow" logger, each once (attached directly: the CLI turns propagation off)."""
    logger = logging.getLogger("rnnflow")
    propagate = logger.propagate
    logger.propagate = False
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="rnnflow"):
            yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate


def test_missing_device_falls_back_with_one_warning(rnnflow_warnings):
    """/gpu:5 does not exist: default placement for all three layers and exactly one warning."""
    from rnnflow.wrappers import DeviceWrapper

    cell = {"type": "rnn", "units": 3, "layers": 3, "wrappers": [{"type": "device", "device": "/gpu:5"}]}
    built, data = compile_spec({"cells": [cell], "projection": None}, inline(X))
    records = [r for r in rnnflow_warnings.records if r.name == "rnnflow" and r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "/gpu:5" in message and all(f"rnn_{i}" in message for i in range(3))
    assert [p.device for p in built.plans] == [None, None, None]
    assert not any(isinstance(layer, DeviceWrapper) for layer in built.model.layers)
    assert np.asarray(built.model(data.train.x)).shape == (3, 4, 3)


def test_missing_device_with_strict_is_an_error():
    from rnnflow.errors import RnnflowError

    cell = {"type": "rnn", "units": 3, "layers": 3,
            "wrappers": [{"type": "device", "device": "/gpu:5", "strict": True}]}
    with pytest.raises(RnnflowError, match="/gpu:5"):
        compile_spec({"cells": [cell], "projection": None}, inline(X))


@pytest.mark.parametrize(
    "device", ["/cpu:0", "cpu:0", "/CPU:0", "/device:CPU:0", "/job:localhost/replica:0/task:0/cpu:0",
               "/job:localhost/replica:0/task:0/device:CPU:0", "/job:localhost/cpu:0"]
)
def test_every_spelling_of_an_existing_device_is_found(device):
    """Any device name the spec accepts and TensorFlow places on CPU:0 is CPU:0, not "missing"."""
    from rnnflow.planner import plan_layers
    from rnnflow.spec import spec_from_text

    spec = spec_from_text(textwrap.dedent(f"""\
        name: spelling
        data: {{type: inline, inputs: [[[1.0]]]}}
        model:
          cells:
            - {{type: rnn, units: 2, wrappers: [{{type: device, device: "{device}", strict: true}}]}}
        train: null
        """))
    assert [p.device for p in plan_layers(spec, devices={"CPU:0"})] == [device]


def test_device_list_spreads_contiguous_blocks():
    """[a, b, c] over 10 layers: each device gets one contiguous block, sizes 4, 3, 3."""
    from rnnflow.planner import plan_layers
    from rnnflow.spec import spec_from_text
    from rnnflow.spec.model import DeviceWrapperSpec

    wrapper = DeviceWrapperSpec(device=["/gpu:0", "/gpu:1", "/gpu:2"])
    placement = [wrapper.device_for(i, 10) for i in range(10)]
    assert placement == ["/gpu:0"] * 4 + ["/gpu:1"] * 3 + ["/gpu:2"] * 3
    assert [wrapper.device_for(i, 3) for i in range(3)] == ["/gpu:0", "/gpu:1", "/gpu:2"]
    assert [DeviceWrapperSpec(device="/cpu:0").device_for(i, 4) for i in range(4)] == ["/cpu:0"] * 4

    spec = spec_from_text(textwrap.dedent("""\
        name: spread
        data: {type: inline, inputs: [[[1.0]]]}
        model:
          cells:
            - {type: rnn, units: 2, layers: 10, wrappers: [{type: device, device: [/gpu:0, /gpu:1, /gpu:2]}]}
        train: null
        """))
    plans = plan_layers(spec, devices={"CPU:0", "GPU:0", "GPU:1", "GPU:2"})
    assert [p.name for p in plans] == [f"rnn_{i}" for i in range(10)]
    assert [p.device for p in plans] == placement


# ------------------------------------------------------------------------------ save and load


SAVE_CASES = {
    "DropoutWrapper": ({"cells": [{"type": "rnn", "units": 3, "wrappers": [{"type": "dropout", "keep_prob": 0.5}]}]},
                       inline(X)),
    "OutputProjectionWrapper": ({"cells": [{"type": "gru", "units": 3}],
                                 "projection": {"units": 2, "mode": "per_step"}}, inline(X)),
    "DeviceWrapper": ({"cells": [{"type": "rnn", "units": 3, "wrappers": [{"type": "device", "device": "/cpu:0"}]}]},
                      inline(X)),
    "SequenceMask": ({"cells": [{"type": "lstm", "units": 3}]},
                     {"type": "padded", "inputs": X.tolist(), "lengths": [4, 2, 3]}),
    "all-together": ({"cells": [{"type": "peephole_lstm", "units": 3, "layers": 2, "wrappers": [
                        {"type": "dropout", "keep_prob": 0.8, "state_keep_prob": 0.7, "output_keep_prob": 0.9},
                        {"type": "device", "device": "/cpu:0"}]}],
                      "projection": {"units": 2, "mode": "per_step"}},
                     {"type": "padded", "inputs": X.tolist(), "lengths": [4, 2, 3]}),
}


@pytest.mark.parametrize("piece", list(SAVE_CASES))
def test_saved_model_with_wrapper_loads_back(piece, tmp_path):
    """`.keras` round trip of a compiled model holding each piece: same predictions, same config."""
    import keras

    import rnnflow.wrappers

    model_spec, data_spec = SAVE_CASES[piece]
    built, data = compile_spec(model_spec, data_spec)
    rng = np.random.default_rng(5)
    model = built.model
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    names = [piece] if piece != "all-together" else list(SAVE_CASES)[:4]
    for cls in (getattr(rnnflow.wrappers, name) for name in names):
        assert any(type(layer) is cls for layer in walk(model)), cls
    inputs = data.train.inputs()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for cls in (getattr(rnnflow.wrappers, name) for name in names):
        assert any(type(layer) is cls for layer in walk(loaded)), cls
    assert plain(loaded.get_config()) == plain(model.get_config())
    for a, b in zip(walk(loaded), walk(model)):
        assert plain(a.get_config()) == plain(b.get_config()), a.name
    want = np.asarray(model(inputs, training=False))
    np.testing.assert_array_equal(np.asarray(loaded(inputs, training=False)), want)
    if piece in ("DropoutWrapper", "all-together"):
        assert np.any(np.asarray(loaded(inputs, training=True)) != want)  # still drops when training
    if piece == "SequenceMask":
        assert np.all(want[1, 2:] == model.get_layer("projection").bias.numpy())  # zeros, projected


def test_wrapper_config_round_trip():
    """get_config/from_config of each wrapper rebuilds the same wrapper around the same cell."""
    import keras

    from rnnflow.wrappers import DeviceWrapper, DropoutWrapper, OutputProjectionWrapper, SequenceMask

    wrappers = [
        DropoutWrapper(keras.layers.GRUCell(3), input_rate=0.1, state_rate=0.2, output_rate=0.3, seed=7),
        OutputProjectionWrapper(keras.layers.SimpleRNNCell(3), 2, activation="tanh"),
        DeviceWrapper(keras.layers.SimpleRNN(3), device="/cpu:0"),
        SequenceMask(5),
    ]
    for wrapper in wrappers:
        config = wrapper.get_config()
        clone = type(wrapper).from_config(copy.deepcopy(config))  # keras.layers.Wrapper pops "layer"
        assert plain(clone.get_config()) == plain(config), type(wrapper).__name__
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(wrapper))
        assert type(revived) is type(wrapper)
        assert plain(revived.get_config()) == plain(config)
    dropout = DropoutWrapper.from_config(wrappers[0].get_config())
    # The config holds the wrapped cell; from_config must not share the original cell object.
    assert dropout.cell is not wrappers[0].cell
    assert (dropout.input_rate, dropout.state_rate, dropout.output_rate, dropout.seed) == (0.1, 0.2, 0.3, 7)
    assert type(dropout.cell) is keras.layers.GRUCell and dropout.cell.units == 3
    mask = SequenceMask.from_config(wrappers[3].get_config())
    np.testing.assert_array_equal(np.asarray(mask(np.array([0, 2, 5]))), np.arange(5)[None, :] < [[0], [2], [5]])


def test_layers_of_one_dropout_cell_draw_different_masks():
    """With an explicit dropout seed, each layer of the stack still gets its own masks.

    Both layers are identity cells (see `identity_rnn`) fed the same ones, so what each returns
    while training is its own dropout mask (0 or 1/keep_prob at every step and unit).
    """
    spec_text = """
name: seeds
data: {type: inline, inputs: [[[1.0, 1.0, 1.0, 1.0, 1.0]]]}
model:
  cells:
    - {type: rnn, units: 5, activation: linear, layers: 2, wrappers: [{type: dropout, keep_prob: 0.5, seed: 11}]}
  projection: null
  output: sequence
train: null
"""
    from rnnflow.build import build_model
    from rnnflow.spec import spec_from_text

    built = build_model(spec_from_text(spec_text))
    layers = [built.model.get_layer(f"rnn_{i}") for i in range(2)]
    assert [layer.cell.seed for layer in layers] == [11, 12]
    masks = []
    for layer in layers:
        inner = layer.cell.cell
        inner.kernel.assign(np.eye(5, dtype=np.float32))
        inner.recurrent_kernel.assign(np.zeros((5, 5), np.float32))
        inner.bias.assign(np.zeros(5, np.float32))
        outputs = np.asarray(layer(ONES.astype(np.float32), training=True)[0])
        assert set(np.unique(outputs)) == {0.0, 2.0}  # dropped, or kept and scaled by 1/0.5
        masks.append(outputs == 0.0)
    assert 0.4 < masks[0].mean() < 0.6 and 0.4 < masks[1].mean() < 0.6
    # Independent masks agree on about half of the 1280 positions; the same seed on all of them.
    assert 0.3 < (masks[0] == masks[1]).mean() < 0.7
