"""Keras 3 versions of TF1's cell wrappers: dropout, output projection and device placement.

`DropoutWrapper` and `OutputProjectionWrapper` wrap a cell and run inside the recurrent loop, as
TF1's did. `DeviceWrapper` wraps a whole recurrent layer: its variables are created and its ops
run under `tf.device`.
"""

from __future__ import annotations

import contextlib

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)
import keras  # noqa: E402
from keras import ops  # noqa: E402


def device_scope(device: str | None):
    """`tf.device(device)`, or no scope at all (default placement) when device is None."""
    if not device:
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.device(device)


class _CellWrapper(keras.layers.Layer):
    """A cell around a cell: delegates state, sizes and building to the wrapped cell."""

    def __init__(self, cell, **kwargs):
        super().__init__(**kwargs)
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        self.cell = cell

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    def build(self, input_shape):
        if not self.cell.built:
            self.cell.build(input_shape)

    def get_initial_state(self, batch_size=None):
        if hasattr(self.cell, "get_initial_state"):
            return self.cell.get_initial_state(batch_size=batch_size)
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        return [ops.zeros((batch_size, s), dtype=self.compute_dtype) for s in sizes]

    def _inner(self, inputs, states, training):
        output, new_states = self.cell(inputs, states, training=training)
        if not isinstance(new_states, (list, tuple)):
            new_states = [new_states]
        return output, list(new_states)

    def get_config(self):
        return {**super().get_config(), "cell": keras.saving.serialize_keras_object(self.cell)}


@keras.saving.register_keras_serializable(package="rnnflow")
class DropoutWrapper(_CellWrapper):
    """Dropout on a cell's input, new state and output at every step, only while training.

    Like TF1's `DropoutWrapper`, a fresh mask is drawn at each step. State dropout leaves an
    LSTM's memory cell `c` alone (TF1's default state filter) and drops the rest of the state.

    Args:
        cell: the wrapped cell.
        input_rate: fraction of inputs dropped (1 - TF1's input_keep_prob).
        state_rate: fraction of state units dropped.
        output_rate: fraction of outputs dropped.
        seed: seed of the masks.
    """

    def __init__(self, cell, input_rate=0.0, state_rate=0.0, output_rate=0.0, seed=None, **kwargs):
        super().__init__(cell, **kwargs)
        for name, rate in (("input_rate", input_rate), ("state_rate", state_rate), ("output_rate", output_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        self.input_rate = float(input_rate)
        self.state_rate = float(state_rate)
        self.output_rate = float(output_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _drop(self, x, rate):
        return keras.random.dropout(x, rate, seed=self.seed_generator)

    def call(self, inputs, states, training=False):
        if training and self.input_rate > 0:
            inputs = self._drop(inputs, self.input_rate)
        output, new_states = self._inner(inputs, states, training)
        if training and self.state_rate > 0:
            # [h, c] is an LSTM state: keep the memory cell c, as TF1 does by default.
            keep_last = len(new_states) == 2
            new_states = [
                s if (keep_last and j == 1) else self._drop(s, self.state_rate) for j, s in enumerate(new_states)
            ]
        if training and self.output_rate > 0:
            output = self._drop(output, self.output_rate)
        return output, new_states

    def get_config(self):
        return {
            **super().get_config(),
            "input_rate": self.input_rate,
            "state_rate": self.state_rate,
            "output_rate": self.output_rate,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="rnnflow")
class OutputProjectionWrapper(_CellWrapper):
    """Projects a cell's output at every step through one dense layer (TF1 `OutputProjectionWrapper`).

    Args:
        cell: the wrapped cell.
        units: size of the projected output.
        activation: activation after the projection (default linear).
        kernel_initializer: initializer of the projection matrix.
    """

    def __init__(self, cell, units, activation=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(cell, **kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def output_size(self):
        return self.units

    def build(self, input_shape):
        super().build(input_shape)
        inner = self.cell.output_size
        self.kernel = self.add_weight(shape=(inner, self.units), name="kernel", initializer=self.kernel_initializer)
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="zeros")

    def call(self, inputs, states, training=False):
        output, new_states = self._inner(inputs, states, training)
        return self.activation(ops.matmul(output, self.kernel) + self.bias), new_states

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="rnnflow")
class DeviceWrapper(keras.layers.Wrapper):
    """Runs a layer, and creates its variables, on one device (TF1 `DeviceWrapper`).

    Keras layers create some variables as they are constructed (every Keras RNN cell and the
    `DropoutWrapper` own a seed generator whose state is a variable), before this wrapper exists:
    construct the wrapped layer inside `device_scope(device)` too, as `rnnflow.build` does and
    `from_config` does when a saved model is loaded.

    Args:
        layer: the wrapped layer (a recurrent layer).
        device: a TensorFlow device name such as "/gpu:1", or None for default placement.
    """

    def __init__(self, layer, device=None, **kwargs):
        super().__init__(layer, **kwargs)
        self.device = device
        self.supports_masking = True

    @classmethod
    def from_config(cls, config, custom_objects=None):
        with device_scope(config.get("device")):
            return super().from_config(config, custom_objects=custom_objects)

    def _scope(self):
        return device_scope(self.device)

    def build(self, input_shape=None):
        with self._scope():
            if not self.layer.built:
                self.layer.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        with self._scope():
            return self.layer(inputs, mask=mask, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mask=None, training=None):
        return self.layer.compute_output_spec(inputs, mask=mask, training=training)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        return {**super().get_config(), "device": self.device}


@keras.saving.register_keras_serializable(package="rnnflow")
class Bidirectional(keras.layers.Bidirectional):
    """Keras' `Bidirectional`, with zeros past each length in the backward direction in every loop.

    Keras zeroes masked outputs of both directions (`zero_output_for_mask`), but its unrolled loop
    run backwards zeroes them with the mask in the wrong time order (keras-team/keras#17596). The
    backward direction needs no zeroing with rnnflow's right-padded masks: it meets the padding
    first, where the output it carries is still the initial zero, in every loop.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        self.backward_layer.zero_output_for_mask = False


@keras.saving.register_keras_serializable(package="rnnflow")
class SequenceMask(keras.layers.Layer):
    """Turns sequence lengths (batch,) into a boolean step mask (batch, steps), as TF1's `sequence_length`.

    Args:
        steps: the padded length of the sequences.
    """

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = int(steps)

    def call(self, lengths):
        positions = ops.arange(self.steps, dtype="int32")
        return ops.expand_dims(positions, 0) < ops.expand_dims(ops.cast(lengths, "int32"), -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.steps)

    def compute_output_spec(self, lengths):
        return keras.KerasTensor((lengths.shape[0], self.steps), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}


__all__ = ["Bidirectional", "DeviceWrapper", "DropoutWrapper", "OutputProjectionWrapper", "SequenceMask", "device_scope"]
