"""rnnflow's own recurrent loop: a time loop with a hand-written backward pass (`model.loop: scan`).

Automatic differentiation of a time loop (Keras' `RNN` over `tf.while_loop`) does all the work of
the backward pass inside the loop, one step at a time: the weight gradients too, as one small
outer product per step added to a running sum. For the small cells of the chapter-14 experiments
that per-step bookkeeping, not arithmetic, is most of the cost of a training step.

Every cell this module knows splits into a recurrent matrix product and a pointwise part:

    z_in(t)  = x(t) W + b             (for all steps at once, before the loop)
    z_rec(t) = h(t-1) U               (inside the loop: the only matmul)
    out(t), state(t) = f(z_in(t), z_rec(t), state(t-1), p)     (pointwise; p: peepholes, biases)

The forward loop keeps z_rec and the states of every step. The backward loop walks the steps in
reverse and differentiates only f (a small `GradientTape` per step) plus one matmul,
dh(t-1) += dz_rec(t) U^T. The weight gradients come after the loop, each one matrix product over
all steps: dU = sum_t h(t-1)^T dz_rec(t); dW and db follow from dz_in by automatic
differentiation of the projection. The math is that of the Keras cell; only the order of float
additions differs (tests compare outputs and gradients with Keras' loop; `benchmarks/` compares
learning curves).

`ScanRNN` is Keras' `RNN` layer with this loop in place of `backend.rnn`: masks, returned
states, configs and saving stay Keras'. Which layers scan is decided in `rnnflow.planner`
(`scan_blockers` there says why a layer cannot); this module only knows how.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from rnnflow.cells import _GatedCell  # noqa: E402

# f(z_in, z_rec, states, params) -> (output, new states), all pointwise.
StepFn = Callable[[tf.Tensor, tf.Tensor, list, list], tuple]

def _cell_parts(cell) -> tuple[StepFn, list]:
    """(pointwise step, the extra weights it uses) for a supported cell: the cell's own code where
    it has the pointwise part as a method of its own."""
    if isinstance(cell, _GatedCell):
        def step(z_in, z_rec, states, p):
            return cell.pointwise(tf.split(z_in + z_rec, cell.gates, axis=-1), states[1], p)

        return step, cell.pointwise_weights()
    if isinstance(cell, keras.layers.LSTMCell):  # Keras' LSTM and rnnflow's forget-bias LSTM
        def step(z_in, z_rec, states, p):
            c, o = cell._compute_carry_and_output_fused(tuple(tf.split(z_in + z_rec, 4, axis=-1)), states[1])
            h = o * cell.activation(c)
            return h, [h, c]

        return step, []
    if isinstance(cell, keras.layers.GRUCell) and cell.reset_after:  # the planner never scans the other GRU
        # Keras' GRUCell has no method for the part after the matmuls: its `call`, written again.
        params = [cell.bias[1]] if cell.use_bias else []

        def step(z_in, z_rec, states, p):
            if p:
                z_rec = z_rec + p[0]
            x_z, x_r, x_h = tf.split(z_in, 3, axis=-1)
            r_z, r_r, r_h = tf.split(z_rec, 3, axis=-1)
            z = cell.recurrent_activation(x_z + r_z)
            r = cell.recurrent_activation(x_r + r_r)
            hh = cell.activation(x_h + r * r_h)
            h = z * states[0] + (1 - z) * hh
            return h, [h]

        return step, params
    if isinstance(cell, keras.layers.SimpleRNNCell):
        def step(z_in, z_rec, states, p):
            h = cell.activation(z_in + z_rec)
            return h, [h]

        return step, []
    raise TypeError(f"no scan loop for {type(cell).__name__}")


def _input_bias(cell):
    if not cell.use_bias:
        return None
    if isinstance(cell, keras.layers.GRUCell):
        return cell.bias[0]  # reset_after: (input bias, recurrent bias)
    return cell.bias


def scan(step: StepFn, z_in, recurrent_kernel, states: Sequence, params: Sequence, mask=None,
         zero_output_for_mask: bool = False):
    """Run `step` over time with the hand-written backward pass.

    Args:
        step: the cell's pointwise part (see the module docstring).
        z_in: input projections, time-major (steps, batch, gates*units).
        recurrent_kernel: U (units, gates*units).
        states: initial states; states[0] is h, the one U multiplies.
        params: extra tensors `step` uses (gradients flow to them).
        mask: optional (steps, batch) booleans: where False the states carry over and the output
            is 0 (`zero_output_for_mask`) or the previous output, as in Keras' loop.
        zero_output_for_mask: see `mask`.

    Returns:
        (outputs (steps, batch, units), final states).
    """
    n_states, n_params = len(states), len(params)
    steps = tf.shape(z_in)[0]
    dtype = z_in.dtype
    keep_output = mask is not None and not zero_output_for_mask
    mask_seq = None if mask is None else tf.expand_dims(mask, -1)

    def mask_at(t):
        return None if mask_seq is None else mask_seq[t]

    def full_step(z_in_t, z_rec_t, carry, p, m):
        """step with masking; carry = states (+ the previous output when it is kept)."""
        out, new = step(z_in_t, z_rec_t, list(carry[:n_states]), p)
        if m is None:
            return out, list(new)
        new = [tf.where(m, s, old) for s, old in zip(new, carry[:n_states])]
        out = tf.where(m, out, carry[n_states] if keep_output else tf.zeros_like(out))
        return out, new + ([out] if keep_output else [])

    def arrays():
        return tf.TensorArray(dtype, size=steps, element_shape=None)

    @tf.custom_gradient
    def run(z_in, u, *rest):
        p, init = list(rest[:n_params]), list(rest[n_params:])
        if keep_output:
            init = init + [tf.zeros_like(init[0])]
        n_carry = len(init)

        def body(t, carry, outs, recs, hist):
            z_rec = tf.matmul(carry[0], u)
            out, new = full_step(z_in[t], z_rec, carry, p, mask_at(t))
            hist = [a.write(t, s) for a, s in zip(hist, new)]
            return t + 1, new, outs.write(t, out), recs.write(t, z_rec), hist

        _, final, outs, recs, hist = tf.while_loop(
            lambda t, *_: t < steps, body, (0, init, arrays(), arrays(), [arrays() for _ in init]),
        )
        outputs, z_rec_all = outs.stack(), recs.stack()
        history = [a.stack() for a in hist]
        # the carry going into each step: the initial one, then the history shifted by one
        before = [tf.concat([s[None], h[:-1]], axis=0) for s, h in zip(init, history)]

        def grad(d_outputs, *d_final):
            d_final = [tf.zeros_like(s) if d is None else d for s, d in zip(final, d_final)]
            if keep_output:
                d_final = d_final + [tf.zeros_like(init[-1])]
            d_outputs = tf.zeros_like(outputs) if d_outputs is None else d_outputs
            u_t = tf.transpose(u)

            def back(i, d_carry, d_p, d_ins, d_recs):
                t = steps - 1 - i
                carry = [b[t] for b in before]
                z_in_t, z_rec_t = z_in[t], z_rec_all[t]
                with tf.GradientTape() as tape:
                    tape.watch([z_in_t, z_rec_t, *carry, *p])
                    out, new = full_step(z_in_t, z_rec_t, carry, p, mask_at(t))
                g = tape.gradient([out, *new], [z_in_t, z_rec_t, *carry, *p],
                                  output_gradients=[d_outputs[t], *d_carry],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
                d_in, d_rec, d_prev, d_pt = g[0], g[1], list(g[2:2 + n_carry]), g[2 + n_carry:]
                d_prev[0] = d_prev[0] + tf.matmul(d_rec, u_t)
                d_p = [a + b for a, b in zip(d_p, d_pt)]
                return i + 1, d_prev, d_p, d_ins.write(t, d_in), d_recs.write(t, d_rec)

            _, d_init, d_p, d_ins, d_recs = tf.while_loop(
                lambda i, *_: i < steps, back, (0, d_final, [tf.zeros_like(x) for x in p], arrays(), arrays()),
            )
            d_rec_all = d_recs.stack()
            d_u = tf.einsum("tbh,tbg->hg", before[0], d_rec_all)
            return (d_ins.stack(), d_u, *d_p, *d_init[:n_states])

        return (outputs, *final[:n_states]), grad

    result = run(z_in, recurrent_kernel, *params, *states)
    return result[0], list(result[1:])


@keras.saving.register_keras_serializable(package="rnnflow")
class ScanRNN(keras.layers.RNN):
    """Keras' `RNN` layer with rnnflow's scan loop (see the module docstring).

    Takes the same arguments as `keras.layers.RNN`. Falls back to Keras' loop when the layer is
    unrolled. With `go_backwards` the sequences and the mask are reversed in time before the loop
    and the outputs come in the order they were computed, as in Keras' `backend.rnn` (a right-padded
    sequence then starts with masked padding and the loop starts at its last valid step).
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        if self.unroll:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self.go_backwards:
            sequences = tf.reverse(sequences, [1])
            mask = None if mask is None else tf.reverse(mask, [1])
        step, params = _cell_parts(cell)
        dtype = sequences.dtype
        kernel = tf.cast(cell.kernel, dtype)
        z_in = tf.einsum("btk,kg->tbg", sequences, kernel)
        bias = _input_bias(cell)
        if bias is not None:
            z_in = z_in + tf.cast(bias, dtype)
        states = [tf.convert_to_tensor(s) for s in (initial_state if isinstance(initial_state, (list, tuple))
                                                    else [initial_state])]
        outputs, final = scan(
            step, z_in, tf.cast(cell.recurrent_kernel, dtype), states, [tf.cast(p, dtype) for p in params],
            mask=None if mask is None else tf.transpose(tf.cast(mask, tf.bool)),
            zero_output_for_mask=self.zero_output_for_mask,
        )
        outputs = tf.transpose(outputs, (1, 0, 2))
        return outputs[:, -1], outputs, final
