"""NumPy references of every cell's equations, and helpers to fix a layer's weights.

Written from the math (TF1 `BasicRNNCell`, `BasicLSTMCell`, `LSTMCell(use_peepholes=True)`,
`GRUCell`; Keras' reset-after GRU; the coupled-gate LSTM), in float64; nothing here calls rnnflow
or Keras. Weights follow Keras' layout: `kernel` (inputs x gates*units), `recurrent_kernel`
(units x gates*units), `bias`; gate order i,f,c,o for LSTMs, z,r,h for GRUs, i,c,o for CIFG.
"""

from __future__ import annotations

import json

import numpy as np

RTOL, ATOL = 1e-5, 1e-6


# ------------------------------------------------------------------------------ NumPy references


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


ACTIVATIONS = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0), "linear": lambda z: z}


def split(z, n):
    return np.split(z, n, axis=-1)


def rnn_step(w, act):
    """h(t) = act(x W + h(t-1) U + b)."""

    def step(x, state):
        (h,) = state
        h = act(x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"])
        return h, (h,)

    return step, 1


def lstm_step(w, act, forget_bias):
    """TF1 BasicLSTMCell: c = σ(f + forget_bias) c(t-1) + σ(i) act(j); h = σ(o) act(c)."""

    def step(x, state):
        h, c = state
        z_i, z_f, z_c, z_o = split(x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"], 4)
        c = sigmoid(z_f + forget_bias) * c + sigmoid(z_i) * act(z_c)
        h = sigmoid(z_o) * act(c)
        return h, (h, c)

    return step, 2


def peephole_step(w, act, forget_bias):
    """Gers & Schmidhuber 2000: c(t-1) into the input and forget gates, c(t) into the output gate."""

    def step(x, state):
        h, c_prev = state
        z_i, z_f, z_c, z_o = split(x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"], 4)
        i = sigmoid(z_i + w["peephole_i"] * c_prev)
        f = sigmoid(z_f + forget_bias + w["peephole_f"] * c_prev)
        c = f * c_prev + i * act(z_c)
        o = sigmoid(z_o + w["peephole_o"] * c)
        h = o * act(c)
        return h, (h, c)

    return step, 2


def gru_step(w, act, reset_after):
    """GRU, h = z h(t-1) + (1 - z) h~.

    reset_after false (TF1 GRUCell): h~ = act(x W_h + (r ⊙ h(t-1)) U_h + b_h), one bias vector.
    reset_after true (Keras/cuDNN): h~ = act(x W_h + b_h + r ⊙ (h(t-1) U_h + b'_h)), bias rows
    [input bias, recurrent bias].
    """
    k, u = w["kernel"], w["recurrent_kernel"]
    units = u.shape[0]
    u_z, u_r, u_h = u[:, :units], u[:, units : 2 * units], u[:, 2 * units :]
    if reset_after:
        b_in, b_rec = w["bias"][0], w["bias"][1]
    else:
        b_in, b_rec = w["bias"], np.zeros(3 * units)
    bi_z, bi_r, bi_h = split(b_in, 3)
    br_z, br_r, br_h = split(b_rec, 3)

    def step(x, state):
        (h,) = state
        x_z, x_r, x_h = split(x @ k, 3)
        z = sigmoid(x_z + bi_z + h @ u_z + br_z)
        r = sigmoid(x_r + bi_r + h @ u_r + br_r)
        if reset_after:
            candidate = act(x_h + bi_h + r * (h @ u_h + br_h))
        else:
            candidate = act(x_h + bi_h + (r * h) @ u_h)
        h = z * h + (1.0 - z) * candidate
        return h, (h,)

    return step, 1


def cifg_step(w, act):
    """Coupled gates: f = 1 - i; c = f c(t-1) + i act(z_c); h = σ(z_o) act(c)."""

    def step(x, state):
        h, c = state
        z_i, z_c, z_o = split(x @ w["kernel"] + h @ w["recurrent_kernel"] + w["bias"], 3)
        i = sigmoid(z_i)
        c = (1.0 - i) * c + i * act(z_c)
        h = sigmoid(z_o) * act(c)
        return h, (h, c)

    return step, 2


def reference_step(cell: dict, w: dict):
    """The NumPy step of a cell spec (defaults as documented in the spec)."""
    act = ACTIVATIONS[cell.get("activation", "tanh")]
    kind = cell["type"]
    if kind == "rnn":
        return rnn_step(w, act)
    if kind == "lstm":
        return lstm_step(w, act, cell.get("forget_bias", 1.0))
    if kind == "peephole_lstm":
        return peephole_step(w, act, cell.get("forget_bias", 1.0))
    if kind == "gru":
        return gru_step(w, act, cell.get("reset_after", True))
    if kind == "cifg_lstm":
        return cifg_step(w, act)
    raise AssertionError(kind)


def run_reference(step_and_states, x, units, lengths=None):
    """Outputs (batch, time, units) and final states; with lengths, each row runs only its valid steps.

    Rows are run one by one on x[row, :length], so padding never enters the computation: the
    outputs after a row's length stay 0 and its final state is the one at its last valid step.
    """
    step, n_states = step_and_states
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    lengths = [steps] * batch if lengths is None else lengths
    outputs = np.zeros((batch, steps, units))
    finals = [np.zeros((batch, units)) for _ in range(n_states)]
    for row in range(batch):
        state = tuple(np.zeros((1, units)) for _ in range(n_states))
        for t in range(lengths[row]):
            out, state = step(x[row : row + 1, t], state)
            outputs[row, t] = out[0]
        for j in range(n_states):
            finals[j][row] = state[j][0]
    return outputs, finals


def run_reference_backward(step_and_states, x, units, lengths=None):
    """The backward direction of TF1's `bidirectional_dynamic_rnn`: each row's valid steps run from
    its last valid step back to step 0 (padding never enters); the output at step t is the one
    computed from x[t], zeros past the length; the final states are those after step 0."""
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    lengths = [steps] * batch if lengths is None else list(lengths)
    outputs = np.zeros((batch, steps, units))
    finals = None
    for row in range(batch):
        length = lengths[row]
        reversed_row = x[row : row + 1, :length][:, ::-1]
        out, states = run_reference(step_and_states, reversed_row, units)
        outputs[row, :length] = out[0, ::-1]
        if finals is None:
            finals = [np.zeros((batch, units)) for _ in states]
        for j, state in enumerate(states):
            finals[j][row] = state[0]
    return outputs, finals


# ----------------------------------------------------------------------------------------- helpers


def fix_weights(layer, seed: int, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Give every trainable weight of `layer` uniform(-scale, scale) values from a seeded RNG.

    Returns the values (float64) by variable name (kernel, recurrent_kernel, bias, peephole_i...).
    """
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray] = {}
    for variable in layer.trainable_weights:
        value = rng.uniform(-scale, scale, tuple(variable.shape)).astype(np.float32)
        variable.assign(value)
        assert variable.name not in values, variable.path
        values[variable.name] = value.astype(np.float64)
    return values


def randomize(model, seed: int, scale: float = 0.5) -> None:
    """Seeded uniform(-scale, scale) values for every weight of a whole model."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-scale, scale, w.shape).astype(np.float32) for w in model.get_weights()])


def plain(config: dict) -> dict:
    """A config as it is stored in a `.keras` file (JSON: tuples become lists)."""
    return json.loads(json.dumps(config))


def as_list(states):
    return list(states) if isinstance(states, (list, tuple)) else [states]


def inline(x: np.ndarray, **extra) -> dict:
    return {"type": "inline", "inputs": np.asarray(x).tolist(), **extra}
