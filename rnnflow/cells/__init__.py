"""Recurrent cells Keras 3 does not have: TF1-style LSTM forget bias, peepholes, coupled gates.

All cells keep their weights in Keras' layout: a `kernel` (inputs x gates*units), a
`recurrent_kernel` (units x gates*units) and a `bias` (gates*units), gates in the order given in
each class. They are registered as Keras serializables, so a saved `.keras` model loads back
wherever rnnflow is installed.
"""

from __future__ import annotations

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)
import keras  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="rnnflow")
class ForgetBiasLSTMCell(keras.layers.LSTMCell):
    """Keras' LSTM cell plus TF1 `BasicLSTMCell`'s `forget_bias`, a constant added inside the gate.

    f(t) = recurrent_activation(W_f x(t) + U_f h(t-1) + b_f + forget_bias). With the bias
    initialized to zeros (TF1's default, `unit_forget_bias=False`) this is TF1's cell exactly.
    Gate order in the weights: input, forget, candidate, output.

    Args:
        units: size of the state.
        forget_bias: the constant added to the forget gate (TF1 default 1.0).
        unit_forget_bias: Keras' alternative: initialize b_f to 1 (default False here, as in TF1).
        **kwargs: anything `keras.layers.LSTMCell` takes.
    """

    def __init__(self, units, forget_bias=1.0, unit_forget_bias=False, **kwargs):
        super().__init__(units, unit_forget_bias=unit_forget_bias, **kwargs)
        self.forget_bias = float(forget_bias)

    def _compute_carry_and_output(self, x, h_tm1, c_tm1):
        x_i, x_f, x_c, x_o = x
        return super()._compute_carry_and_output((x_i, x_f + self.forget_bias, x_c, x_o), h_tm1, c_tm1)

    def _compute_carry_and_output_fused(self, z, c_tm1):
        z0, z1, z2, z3 = z
        return super()._compute_carry_and_output_fused((z0, z1 + self.forget_bias, z2, z3), c_tm1)

    def get_config(self):
        return {**super().get_config(), "forget_bias": self.forget_bias}


class _GatedCell(keras.layers.Layer):
    """Shared weights, state and config of the custom gated cells below."""

    gates = 4

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units <= 0:
            raise ValueError(f"units must be positive, got {units}")
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.state_size = [self.units, self.units]  # [h, c], as Keras' LSTM
        self.output_size = self.units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            shape=(input_dim, self.units * self.gates), name="kernel", initializer=self.kernel_initializer
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units * self.gates),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
        )
        self.bias = (
            self.add_weight(shape=(self.units * self.gates,), name="bias", initializer=self.bias_initializer)
            if self.use_bias
            else None
        )

    def _preactivations(self, inputs, h_tm1):
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_tm1, self.recurrent_kernel)
        if self.use_bias:
            z = z + self.bias
        return ops.split(z, self.gates, axis=-1)

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1 = states[0], states[1]
        return self.pointwise(self._preactivations(inputs, h_tm1), c_tm1, self.pointwise_weights())

    def pointwise_weights(self) -> list:
        """The weights `pointwise` uses besides the pre-activations (the peephole vectors)."""
        return []

    def pointwise(self, z, c_tm1, weights):
        """The part of a step after the matmuls: (h, [h, c]) from the gates' pre-activations
        `z` (one tensor per gate), c(t-1) and `pointwise_weights()`. rnnflow's scan loop
        differentiates this alone at every step."""
        raise NotImplementedError

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype) for _ in self.state_size]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="rnnflow")
class PeepholeLSTMCell(_GatedCell):
    """LSTM with peephole connections (Gers & Schmidhuber 2000), as TF1 `LSTMCell(use_peepholes=True)`.

        i = σ(W_i x + U_i h + b_i + p_i ⊙ c(t-1))
        f = σ(W_f x + U_f h + b_f + forget_bias + p_f ⊙ c(t-1))
        c(t) = f ⊙ c(t-1) + i ⊙ act(W_c x + U_c h + b_c)
        o = σ(W_o x + U_o h + b_o + p_o ⊙ c(t))
        h(t) = o ⊙ act(c(t))

    Gate order in the weights: input, forget, candidate, output. The peephole weights are the
    vectors `peephole_i`, `peephole_f`, `peephole_o`.

    Args:
        units: size of the state.
        forget_bias: the constant added to the forget gate (TF1 default 1.0).
        peephole_initializer: initializer of the peephole vectors.
        **kwargs: activation, recurrent_activation, use_bias and the initializers.
    """

    def __init__(self, units, forget_bias=1.0, peephole_initializer="glorot_uniform", **kwargs):
        super().__init__(units, **kwargs)
        self.forget_bias = float(forget_bias)
        self.peephole_initializer = keras.initializers.get(peephole_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.peephole_i, self.peephole_f, self.peephole_o = (
            self.add_weight(shape=(self.units,), name=f"peephole_{g}", initializer=self.peephole_initializer)
            for g in "ifo"
        )

    def pointwise_weights(self) -> list:
        return [self.peephole_i, self.peephole_f, self.peephole_o]

    def pointwise(self, z, c_tm1, weights):
        z_i, z_f, z_c, z_o = z
        peephole_i, peephole_f, peephole_o = weights
        i = self.recurrent_activation(z_i + peephole_i * c_tm1)
        f = self.recurrent_activation(z_f + self.forget_bias + peephole_f * c_tm1)
        c = f * c_tm1 + i * self.activation(z_c)
        o = self.recurrent_activation(z_o + peephole_o * c)
        h = o * self.activation(c)
        return h, [h, c]

    def get_config(self):
        return {
            **super().get_config(),
            "forget_bias": self.forget_bias,
            "peephole_initializer": keras.initializers.serialize(self.peephole_initializer),
        }


@keras.saving.register_keras_serializable(package="rnnflow")
class CIFGLSTMCell(_GatedCell):
    """Coupled input/forget-gate LSTM: the forget gate is 1 - the input gate.

        i = σ(W_i x + U_i h + b_i);  f = 1 - i
        c(t) = f ⊙ c(t-1) + i ⊙ act(W_c x + U_c h + b_c)
        o = σ(W_o x + U_o h + b_o);  h(t) = o ⊙ act(c(t))

    Gate order in the weights: input, candidate, output.
    """

    gates = 3

    def pointwise(self, z, c_tm1, weights):
        z_i, z_c, z_o = z
        i = self.recurrent_activation(z_i)
        c = (1.0 - i) * c_tm1 + i * self.activation(z_c)
        o = self.recurrent_activation(z_o)
        h = o * self.activation(c)
        return h, [h, c]


__all__ = ["CIFGLSTMCell", "ForgetBiasLSTMCell", "PeepholeLSTMCell"]
