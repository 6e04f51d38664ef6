"""`model.loop: scan`: rnnflow's time loop with a hand-written backward pass (rnnflow/scan.py).

The forward pass against the NumPy equations of each cell, the gradients against automatic
differentiation of Keras' loop (plain and padded input, graph and XLA), the fallbacks, the spec
check, saving, and training steps that match Keras' loop step for step.
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
    sigmoid,
)
from test_cells import CELLS, LENGTHS, PADDED, SEED_X, X

SCAN_CELLS = {name: cell for name, cell in CELLS.items() if name != "gru-reset_before"}


def _scan_and_keras(cell: dict | list[dict], data: dict, **model):
    """The same model (one layer, or a stack) compiled with model.loop scan and keras, sharing weights."""
    model = {"cells": cell if isinstance(cell, list) else [cell], "projection": None, **model}
    scan, bundle = compile_spec({**model, "loop": "scan"}, data)
    keras_loop, _ = compile_spec({**model, "loop": "keras"}, data)
    assert all(p.execution == "scan" for p in scan.plans) and not any(p.execution == "scan" for p in keras_loop.plans)
    randomize(scan.model, seed=sum(map(ord, str(cell))), scale=0.5)
    keras_loop.model.set_weights(scan.model.get_weights())
    return scan, keras_loop, bundle


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("name", list(SCAN_CELLS))
def test_scan_forward_matches_numpy_reference(name, padded):
    """Outputs at every step and final states equal the cell's equations (and TF1's padding rules)."""
    from rnnflow.scan import ScanRNN

    cell = SCAN_CELLS[name]
    data = PADDED if padded else inline(X)
    built, bundle = compile_spec({"cells": [cell], "projection": None, "loop": "scan"}, data)
    layer_name = f"{cell['type']}_0"
    layer = built.model.get_layer(layer_name)
    assert type(layer) is ScanRNN and built.plans[0].execution == "scan"
    weights = fix_weights(layer, seed=sum(map(ord, name)), scale=0.2 if padded else 0.5)
    lengths = LENGTHS if padded else None
    expected, expected_states = run_reference(reference_step(cell, weights), bundle.train.x, cell["units"],
                                              lengths=lengths)
    probe = built.probe_model(bundle.train.inputs(), training=False)
    np.testing.assert_allclose(np.asarray(probe["outputs"]), expected, rtol=RTOL, atol=ATOL)
    if padded:
        outputs = np.asarray(probe["outputs"])
        for row, length in enumerate(LENGTHS):
            assert np.all(outputs[row, length:] == 0.0)
    states = as_list(probe["states"][layer_name])
    assert len(states) == len(expected_states)
    for got, want in zip(states, expected_states):
        np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)


def _gradients(built, inputs, jit: bool):
    """d(loss)/d(weights) with a loss that reads every output step and every final state."""
    import tensorflow as tf

    model = built.probe_model
    variables = built.model.trainable_weights

    def grads():
        with tf.GradientTape() as tape:
            result = model(inputs, training=True)
            parts = [result["outputs"], *[s for states in result["states"].values() for s in as_list(states)]]
            loss = tf.add_n([tf.reduce_sum(tf.sin(3.0 * p) * (i + 1)) for i, p in enumerate(parts)])
        return loss, tape.gradient(loss, variables)

    loss, values = tf.function(grads, jit_compile=jit)()
    return float(loss), [np.asarray(v) for v in values]


# One cell of each kind (every code path of rnnflow/scan.py), each in two modes: full sequences
# in graph mode, padded ones under XLA.
GRADIENT_CELLS = ["rnn-relu", "lstm-forget_bias-2.5", "lstm-forget_bias-0-keras", "peephole_lstm-forget_bias-0.5",
                  "gru-reset_after", "cifg_lstm"]


@pytest.mark.parametrize("mode", ["full-graph", "padded-xla"])
@pytest.mark.parametrize("name", GRADIENT_CELLS)
def test_scan_gradients_match_keras_loop(name, mode):
    """The hand-written backward pass gives automatic differentiation's gradients (float rounding)."""
    padded = mode == "padded-xla"
    scan, keras_loop, bundle = _scan_and_keras(SCAN_CELLS[name], PADDED if padded else inline(X))
    inputs = bundle.train.inputs()
    loss_scan, grads_scan = _gradients(scan, inputs, jit=padded)
    loss_keras, grads_keras = _gradients(keras_loop, inputs, jit=padded)
    assert loss_scan == pytest.approx(loss_keras, rel=1e-5)
    assert len(grads_scan) == len(grads_keras) >= 2
    for got, want in zip(grads_scan, grads_keras):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def _assert_close(got, want, rtol: float, what: str):
    """Equal within rtol, relative to the largest value (gradients near zero carry no relative sense)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    assert np.abs(want).max() > 0, what
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=what)


def _compare_forward(scan, keras_loop, inputs, rtol: float):
    """The probe models' top outputs and every layer's final states, scan against Keras' loop."""
    got, want = scan.probe_model(inputs, training=False), keras_loop.probe_model(inputs, training=False)
    _assert_close(got["outputs"], want["outputs"], rtol, "outputs")
    for name in want["states"]:
        for j, (a, b) in enumerate(zip(as_list(got["states"][name]), as_list(want["states"][name]), strict=True)):
            _assert_close(a, b, rtol, f"{name} final state {j}")


def _compare_gradients(scan, keras_loop, inputs, rtol: float):
    loss_scan, grads_scan = _gradients(scan, inputs, jit=False)
    loss_keras, grads_keras = _gradients(keras_loop, inputs, jit=False)
    assert loss_scan == pytest.approx(loss_keras, rel=rtol)
    assert len(grads_scan) == len(grads_keras) >= 2
    for variable, got, want in zip(scan.model.trainable_weights, grads_scan, grads_keras):
        _assert_close(got, want, rtol, f"d loss / d {variable.path}")


def test_scan_keeps_the_last_valid_output_under_output_last():
    """Padded input, `model.output: last`: the top layer keeps each row's last valid output through
    the padded steps (ScanRNN with a mask and zero_output_for_mask=False: scan's keep_output);
    the layer below it zeroes them. Outputs, final states and gradients as Keras' loop."""
    stack = [{"type": "lstm", "units": 4, "forget_bias": 2.5}, {"type": "gru", "units": 4}]
    lengths = [4, 1, 3]
    scan, keras_loop, bundle = _scan_and_keras(stack, {"type": "padded", "inputs": X.tolist(), "lengths": lengths},
                                               output="last")
    below, top = scan.model.get_layer("lstm_0"), scan.model.get_layer("gru_1")
    assert below.zero_output_for_mask is True and below.return_sequences is True
    assert top.zero_output_for_mask is False and top.return_sequences is False
    inputs = bundle.train.inputs()
    _compare_forward(scan, keras_loop, inputs, rtol=1e-5)
    last = np.asarray(scan.model(inputs))
    assert np.all(last[1] != 0.0)  # the row of length 1: its first output, not a zero from padding
    _compare_gradients(scan, keras_loop, inputs, rtol=1e-4)


# Half precision has 11 (float16) or 8 (bfloat16) significant bits, and scan and Keras' loop round
# differently: measured here, up to 1e-3 (outputs) and 2e-3 (gradients) of the largest value in
# float16, 4e-3 and 1.3e-2 in bfloat16 (float32: 2e-7). The tolerances leave about 4x of that.
HALF = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


@pytest.mark.parametrize("precision", list(HALF))
def test_scan_under_mixed_precision_follows_keras_loop(precision):
    """The scan steps with weights of their own beside the kernels (the GRU's recurrent bias, the
    peepholes), padded, computing in half precision: outputs, final states and gradients as Keras'
    loop, within half-precision rounding."""
    stack = [{"type": "gru", "units": 4}, {"type": "peephole_lstm", "units": 3}]
    padded = {"type": "padded", "inputs": X.tolist(), "lengths": [4, 1, 3]}
    scan, keras_loop, bundle = _scan_and_keras(stack, padded, precision=precision)
    half = precision.split("_")[1]
    assert {scan.model.get_layer(p.name).compute_dtype for p in scan.plans} == {half}
    inputs = bundle.train.inputs()
    _compare_forward(scan, keras_loop, inputs, rtol=HALF[precision])
    _compare_gradients(scan, keras_loop, inputs, rtol=HALF[precision])


def test_scan_trains_under_mixed_precision_like_keras_loop():
    """Ten Adam steps computing in float16: finite losses that fall, as Keras' loop's."""
    losses = {}
    for loop in ("keras", "scan"):
        _, built, losses[loop] = _train_tiny_sine(loop, ["model.precision=mixed_float16", "train.jit_compile=false"])
        assert built.plans[0].execution == ("scan" if loop == "scan" else "fused")
    assert np.all(np.isfinite(losses["scan"]))
    # The loss is a mean in float32 of a float16 forecast: float16's unit roundoff (2^-11), twice.
    np.testing.assert_allclose(losses["scan"], losses["keras"], rtol=1e-3)
    assert losses["scan"][-1] < losses["scan"][0]


INITIAL_STATE_LENGTHS = np.asarray([4, 1, 3])
# One cell of each kind of step in scan._cell_parts: Keras' SimpleRNN, LSTM (with rnnflow's
# forget bias) and GRU cells, and rnnflow's gated cells (with their peephole weights).
INITIAL_STATE_CELLS = ["rnn-relu", "lstm-forget_bias-2.5", "gru-reset_after", "peephole_lstm-forget_bias-0.5"]


@pytest.mark.parametrize("name", INITIAL_STATE_CELLS)
def test_scan_gradients_from_nonzero_initial_states(name):
    """`initial_state` given to the layer: gradients with respect to the weights, the inputs and the
    initial states equal automatic differentiation of Keras' loop. Zero initial states hide a
    backward pass that mishandles the first step (or drops the initial states' gradient)."""
    import tensorflow as tf

    cell = SCAN_CELLS[name]
    scan, keras_loop, _ = _scan_and_keras(cell, inline(X))
    layer_name = f"{cell['type']}_0"
    rng = np.random.default_rng(sum(map(ord, name)))
    n_states = 2 if "lstm" in cell["type"] else 1
    x = tf.constant(X, tf.float32)
    initial = [tf.constant(rng.uniform(-1, 1, (len(X), cell["units"])), tf.float32) for _ in range(n_states)]
    mask = tf.constant(np.arange(X.shape[1])[None, :] < INITIAL_STATE_LENGTHS[:, None])

    def gradients(built):
        layer = built.model.get_layer(layer_name)

        @tf.function
        def run():
            with tf.GradientTape() as tape:
                tape.watch([x, *initial])
                outputs, *final = layer(x, initial_state=list(initial), mask=mask, training=True)
                parts = [outputs, *final]
                loss = tf.add_n([tf.reduce_sum(tf.sin(3.0 * p) * (i + 1)) for i, p in enumerate(parts)])
            return loss, tape.gradient(loss, [*layer.trainable_weights, x, *initial])

        loss, grads = run()
        return float(loss), [np.asarray(g) for g in grads]

    loss_scan, grads_scan = gradients(scan)
    loss_keras, grads_keras = gradients(keras_loop)
    assert loss_scan == pytest.approx(loss_keras, rel=1e-5)
    names = [w.path for w in scan.model.get_layer(layer_name).trainable_weights]
    names += ["inputs"] + [f"initial state {j}" for j in range(n_states)]
    assert len(grads_scan) == len(grads_keras) == len(names)
    for what, got, want in zip(names, grads_scan, grads_keras):
        _assert_close(got, want, 1e-4, f"d loss / d {what}")


def test_scan_training_steps_follow_keras_loop():
    """Ten XLA-compiled Adam steps on the sine window: the same losses as Keras' loop, step by step."""
    losses = {}
    for loop in ("keras", "scan"):
        _, built, losses[loop] = _train_tiny_sine(loop, ["train.jit_compile=true"])
        assert built.plans[0].execution == ("scan" if loop == "scan" else "fused")
    assert np.all(np.isfinite(losses["scan"]))
    np.testing.assert_allclose(losses["scan"], losses["keras"], rtol=1e-4)
    assert losses["scan"][-1] < losses["scan"][0]  # it learns


def _train_tiny_sine(loop: str, overrides: list[str]):
    """Ten logged steps of the sine spec, small, from seeded weights: (spec, BuiltModel, losses)."""
    from conftest import ROOT

    from rnnflow.build import build_model
    from rnnflow.data.base import LoadContext
    from rnnflow.spec import load_spec
    from rnnflow.train import Trainer

    spec = load_spec(ROOT / "specs" / "sine_forecast.yaml", overrides=[
        f"model.loop={loop}", "model.cells[0].units=8", "data.steps=12", "train.iterations=10",
        "train.log_every=1", *overrides,
    ])
    data = spec.data.load(LoadContext(spec.seed, spec.base_dir))
    built = build_model(spec, data)
    randomize(built.model, seed=3, scale=0.3)
    result = Trainer(spec, built, data).run()
    assert [at for at, _ in result.curve] == list(range(1, 11))
    return spec, built, np.asarray([loss for _, loss in result.curve])


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ({"cells": [{"type": "gru", "units": 3, "reset_after": False}]}, "reset_after: false"),
        ({"cells": [{"type": "rnn", "units": 3, "wrappers": [{"type": "dropout", "keep_prob": 0.5}]}]},
         "dropout wrapper"),
        ({"cells": [{"type": "lstm", "units": 3}], "projection": {"mode": "per_step"}}, "per_step projection"),
    ],
    ids=["gru-reset_before", "dropout", "per_step"],
)
def test_scan_falls_back_to_keras_loop_and_says_why(model, reason):
    from rnnflow.scan import ScanRNN

    built, _ = compile_spec({**model, "loop": "scan"}, inline(X))
    plan = built.plans[0]
    assert plan.execution != "scan"
    assert any(reason in r for r in plan.scan_blockers), plan.scan_blockers
    assert not any(isinstance(layer, ScanRNN) for layer in built.model.layers)


def test_scan_only_below_the_layers_that_need_keras_loop():
    """In a stack, only the top layer with a per-step projection falls back."""
    built, _ = compile_spec({"cells": [{"type": "gru", "units": 3, "layers": 3}], "loop": "scan",
                                "projection": {"mode": "per_step"}}, inline(X))
    assert [p.execution for p in built.plans] == ["scan", "scan", "cell loop"]


def test_scan_with_unroll_is_a_located_spec_error():
    import yaml

    from rnnflow.errors import SpecError
    from rnnflow.spec import spec_from_text

    text = yaml.safe_dump({"name": "x", "data": inline(X), "model": {"cells": [{"type": "rnn", "units": 2}],
                                                                   "loop": "scan", "unroll": True}, "train": None},
                          sort_keys=False)
    with pytest.raises(SpecError) as info:
        spec_from_text(text)
    message = str(info.value)
    assert "model.loop" in message and "unroll" in message


def test_scan_model_saves_and_loads(tmp_path):
    """A `.keras` file of a scan model loads back (ScanRNN is registered) and predicts the same."""
    import keras

    from rnnflow.scan import ScanRNN

    built, bundle = compile_spec({"cells": [{"type": "peephole_lstm", "units": 3}, {"type": "rnn", "units": 2}],
                                     "loop": "scan"}, PADDED)
    randomize(built.model, seed=5)
    path = tmp_path / "model.keras"
    built.model.save(path)
    loaded = keras.saving.load_model(path)
    assert sum(isinstance(layer, ScanRNN) for layer in loaded.layers) == 2
    inputs = bundle.train.inputs()
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(built.model(inputs)), rtol=1e-6)


def test_show_names_the_loop_of_each_layer():
    from rnnflow.show import describe
    from rnnflow.spec import spec_from_text

    text = f"""
name: show_scan
data: {{type: inline, inputs: {SEED_X.tolist()}}}
model:
  loop: scan
  cells:
    - {{type: gru, units: 3}}
    - {{type: gru, units: 3, reset_after: false}}
train: null
"""
    out = describe(spec_from_text(text))
    assert "gru_0: gru, 3 units, tanh, scan" in out
    assert "loop: scan (rnnflow's loop" in out
    assert "gru_1: gru, 3 units, tanh, fused" in out
    assert "loop: Keras' (model.loop is scan, but reset_after: false" in out


@pytest.mark.parametrize("forget_bias", [None, 1.5], ids=["keras-LSTMCell", "ForgetBiasLSTMCell"])
def test_keras_private_lstm_step_that_scan_calls(forget_bias):
    """scan.py (and ForgetBiasLSTMCell) call Keras' private `LSTMCell._compute_carry_and_output_fused`;
    pyproject.toml pins Keras to the minor version this passes with. A Keras that drops the method
    or changes what it computes fails here, by name, instead of training a wrong model."""
    import keras

    from rnnflow.cells import ForgetBiasLSTMCell

    where = (f"Keras {keras.__version__}: LSTMCell._compute_carry_and_output_fused, which rnnflow/scan.py "
             "(_cell_parts) and rnnflow.cells.ForgetBiasLSTMCell call,")
    assert callable(getattr(keras.layers.LSTMCell, "_compute_carry_and_output_fused", None)), f"{where} is gone"
    if forget_bias is None:
        cell, bias = keras.layers.LSTMCell(4, activation="relu"), 0.0
    else:
        cell, bias = ForgetBiasLSTMCell(4, forget_bias=forget_bias, activation="relu"), forget_bias
    cell.build((None, 3))
    rng = np.random.default_rng(21)
    z = [rng.normal(0.0, 2.0, (3, 4)).astype(np.float32) for _ in range(4)]  # i, f, c, o pre-activations
    c_prev = rng.uniform(-1.0, 1.0, (3, 4)).astype(np.float32)
    c, o = cell._compute_carry_and_output_fused(tuple(z), c_prev)
    z_i, z_f, z_c, z_o = (v.astype(np.float64) for v in z)
    want_c = sigmoid(z_f + bias) * c_prev + sigmoid(z_i) * np.maximum(z_c, 0.0)
    np.testing.assert_allclose(np.asarray(c), want_c, rtol=RTOL, atol=ATOL,
                               err_msg=f"{where} no longer returns the new carry c first")
    np.testing.assert_allclose(np.asarray(o), sigmoid(z_o), rtol=RTOL, atol=ATOL,
                               err_msg=f"{where} no longer returns the output gate o second")
