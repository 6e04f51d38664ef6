"""Spec -> Keras model: a functional model with stable, readable layer names.

Each recurrent layer is built the way its plan says (`rnnflow.planner`); this module decides
nothing about execution paths.

Layer names: `inputs` (and `lengths`/`mask` for padded data), then `<cell type>_<index>` for each
recurrent layer from the bottom (`gru_0`, `gru_1`, ...; a bidirectional layer holds
`forward_gru_0` and `backward_gru_0`), then `mean` (with `model.output: mean`) and `projection`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any

import rnnflow._tf  # noqa: F401  (quiet TensorFlow import)  # isort: skip
import keras  # noqa: E402
import numpy as np  # noqa: E402

import rnnflow.cells  # noqa: E402,F401  (registers the custom cells for loading)
from rnnflow.cells.factory import fused_layer, keras_cell  # noqa: E402
from rnnflow.errors import SpecError, SpecIssue  # noqa: E402
from rnnflow.planner import CELL_LOOP, FUSED, SCAN, LayerPlan, plan_layers  # noqa: E402
from rnnflow.scan import ScanRNN  # noqa: E402  (also registers it for loading)
from rnnflow.wrappers import (  # noqa: E402
    Bidirectional,
    DeviceWrapper,
    DropoutWrapper,
    OutputProjectionWrapper,
    SequenceMask,
    device_scope,
)

if TYPE_CHECKING:  # pragma: no cover
    from rnnflow.data.base import DataBundle, Split
    from rnnflow.spec import Spec

log = logging.getLogger("rnnflow")


def _layer(plan: LayerPlan, spec: Spec, *, return_sequences: bool, projection_units: int | None) -> keras.layers.Layer:
    """The Keras layer for one plan, wrapped as its cell spec asks."""
    # Cells and wrappers create variables (seed generator states) as they are constructed, not
    # only when built: construct them on the plan's device too, or those stay on the default one.
    with device_scope(plan.device):
        inner_name = f"{plan.name}_rnn" if plan.device else plan.name
        if not plan.bidirectional:
            layer = _recurrent_layer(plan, spec, inner_name, return_sequences=return_sequences,
                                     projection_units=projection_units)
        else:
            # Both directions built here (Keras would copy the forward one): the backward one gets
            # its own dropout masks. Keras' loops run a layer with go_backwards over each sequence
            # reversed, padding first and masked: it starts at the last valid step, as TF1's
            # bidirectional_dynamic_rnn does.
            forward = _recurrent_layer(plan, spec, inner_name, return_sequences=return_sequences,
                                       projection_units=projection_units)
            backward = _recurrent_layer(plan, spec, f"backward_{inner_name}", return_sequences=return_sequences,
                                        projection_units=projection_units, backwards=True)
            layer = Bidirectional(forward, merge_mode=plan.merge_mode, backward_layer=backward,
                                               name=inner_name)
    if plan.device:
        layer = DeviceWrapper(layer, device=plan.device, name=plan.name)
    return layer


def _recurrent_layer(plan: LayerPlan, spec: Spec, name: str, *, return_sequences: bool,
                     projection_units: int | None, backwards: bool = False) -> keras.layers.Layer:
    """One direction of a layer, on the plan's execution path."""
    cell_spec = plan.cell
    rnn_args: dict[str, Any] = {
        "return_sequences": return_sequences,
        "return_state": True,
        "unroll": spec.model.unroll,
        # TF1 dynamic_rnn: outputs past a sequence's length are 0. Only for the sequence of
        # outputs: Keras takes the last output from the last position, which would then be 0 for
        # every short sequence; without zeroing it is the output at the sequence's last valid step.
        "zero_output_for_mask": return_sequences,
        "go_backwards": backwards,
    }
    cell_name = f"{plan.name}_backward_cell" if backwards else f"{plan.name}_cell"
    if plan.execution == FUSED:
        return fused_layer(cell_spec, name, **rnn_args)
    if plan.execution == SCAN:
        return ScanRNN(keras_cell(cell_spec, cell_name), name=name, **rnn_args)
    assert plan.execution == CELL_LOOP, plan.execution
    cell = keras_cell(cell_spec, cell_name)
    dropout = cell_spec.wrapper("dropout")
    if dropout is not None:
        # Each layer (and direction) its own masks, also when the spec fixes the seed.
        seed = (dropout.seed if dropout.seed is not None else spec.seed) + plan.index
        cell = DropoutWrapper(
            cell,
            input_rate=dropout.input_rate,
            state_rate=dropout.state_drop_rate,
            output_rate=dropout.output_drop_rate,
            seed=seed + spec.model.layer_count if backwards else seed,
            name=f"{plan.name}_backward_dropout" if backwards else f"{plan.name}_dropout",
        )
    if plan.per_step_projection:
        cell = OutputProjectionWrapper(
            cell, projection_units, activation=spec.model.projection.activation, name="projection"
        )
    return keras.layers.RNN(cell, name=name, **rnn_args)


@dataclasses.dataclass
class BuiltModel:
    """The Keras model built from a spec, with helpers to run it (not Keras-built: rnnflow
    trains it with its own loop).

    Attributes:
        model: inputs -> predictions (logits for classification).
        probe_model: inputs -> the top layer's outputs and every layer's final states.
        plans: how each recurrent layer was built.
        masked: whether the model takes a `lengths` input.
    """

    model: keras.Model
    probe_model: keras.Model
    plans: list[LayerPlan]
    masked: bool
    eval_batch_size: int = 1024

    def __post_init__(self):
        self._forward = None

    def forward(self, inputs):
        """The model at inference (no dropout), compiled once."""
        if self._forward is None:
            import tensorflow as tf

            self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        return self._forward(inputs)

    def predict(self, split: Split, batch_size: int | None = None) -> np.ndarray:
        """Predictions for a whole split, in batches."""
        size = batch_size or self.eval_batch_size
        outputs = [
            np.asarray(self.forward(split.inputs(slice(start, start + size))))
            for start in range(0, len(split), size)
        ]
        return np.concatenate(outputs, axis=0)

    def probe(self, split: Split, n: int) -> dict[str, Any]:
        """Outputs of the top layer at every step and the final states of every layer, first n rows."""
        result = self.probe_model(split.inputs(slice(0, n)), training=False)
        return {k: _numpy(v) for k, v in result.items()}

    def generate(self, window: np.ndarray, length: int) -> np.ndarray:
        """Feed predictions back as inputs `length` times, starting from `window` (steps, features)."""
        window = np.asarray(window, np.float32).copy()
        produced = np.zeros((length, window.shape[1]), np.float32)
        for i in range(length):
            prediction = np.asarray(self.forward(window[None]))[0, -1]
            produced[i] = prediction
            window = np.concatenate([window[1:], prediction[None]], axis=0)
        return produced


def _numpy(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_numpy(v) for v in value]
    if isinstance(value, dict):
        return {k: _numpy(v) for k, v in value.items()}
    return np.asarray(value)


def _graph(spec: Spec, data: DataBundle):
    """The functional graph: (inputs, outputs, top layer output, final states, plans, masked)."""
    steps, features = data.input_shape
    masked = data.masked_inputs
    x_in = keras.Input((steps, features), name="inputs")
    mask = None
    if masked:
        lengths_in = keras.Input((), dtype="int32", name="lengths")
        mask = SequenceMask(steps, name="mask")(lengths_in)
        inputs: Any = {"inputs": x_in, "lengths": lengths_in}
    else:
        inputs = x_in

    projection = spec.model.projection
    out_units = (projection.units or data.output_size) if projection is not None else None
    plans = plan_layers(spec)
    _check_output_size(spec, data, out_units if projection is not None else plans[-1].cell.units)
    hidden = x_in
    states: dict[str, Any] = {}
    output = spec.model.output
    for plan in plans:
        is_top = plan.index == len(plans) - 1
        layer = _layer(plan, spec, return_sequences=not is_top or output != "last", projection_units=out_units)
        result = layer(hidden, mask=mask) if mask is not None else layer(hidden)
        hidden, layer_states = result[0], list(result[1:])
        states[plan.name] = layer_states if len(layer_states) > 1 else layer_states[0]
    if output == "mean":
        # Keras' pooling divides by the valid steps when given the mask: zeros past a length
        # count for nothing.
        hidden = keras.layers.GlobalAveragePooling1D(name="mean")(hidden, mask=mask)
    top = hidden
    if projection is not None and projection.mode == "stacked":
        # One dense layer over all steps at once: TF1's "stack the outputs, project, unstack".
        outputs = keras.layers.Dense(out_units, activation=projection.activation, name="projection")(top)
    else:
        outputs = top
    if spec.model.precision != "float32":
        outputs = keras.layers.Activation("linear", dtype="float32", name="to_float32")(outputs)
    return inputs, outputs, top, states, plans, masked


def _check_output_size(spec: Spec, data: DataBundle, size: int) -> None:
    """Refuse a model whose outputs do not match the targets: the loss would broadcast them silently.

    Raises:
        SpecError: located at model.projection(.units) when the data has targets of another size.
    """
    if data.train.y is None or size == data.output_size:
        return
    key: tuple[str, ...] = ("model", "projection")
    if spec.model.projection is None:
        message = (f"null gives the top layer's {size} outputs, but the {spec.data.type} targets need "
                   f"{data.output_size}; project with {{units: {data.output_size}}}")
    else:
        key += ("units",)
        message = (f"{size} outputs, but the {spec.data.type} targets need {data.output_size} "
                   "(leave units out to use the data's size)")
    position = spec.document.position(key) if spec.document is not None else None
    source = position.source if position is not None else spec.name
    line = position.line if position is not None else None
    column = position.column if position is not None else None
    raise SpecError([SpecIssue(source, line, column, ".".join(key), message)])


def build_model(spec: Spec, data: DataBundle | None = None) -> BuiltModel:
    """Compile a spec into a Keras model.

    Args:
        spec: the validated spec.
        data: the loaded data (loaded from the spec's source when omitted); it gives the input
            shape, the output size and whether inputs are padded.

    Returns:
        The BuiltModel.

    Raises:
        SpecError: when the model's outputs do not match the size of the data's targets.
        RnnflowError: when a strict device wrapper names a missing device.
    """
    if data is None:
        from rnnflow.data.base import load_data

        data = load_data(spec)
    # Layers take the dtype policy in force when they are constructed: mixed precision computes
    # in half precision and keeps float32 variables; the outputs are cast back to float32.
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(spec.model.precision)
    try:
        inputs, outputs, top, states, plans, masked = _graph(spec, data)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    model = keras.Model(inputs, outputs, name=spec.name.replace(".", "_"))
    probe = keras.Model(inputs, {"outputs": top, "states": states}, name="probe")
    return BuiltModel(model, probe, plans, masked, spec.evaluate.batch_size)


SUMMARY_WIDTH = 100


def model_summary(model: keras.Model) -> str:
    """The Keras summary as text."""
    lines: list[str] = []
    # Keras draws the table with rich, whose console is as wide as $COLUMNS, the terminal, or 80
    # columns: a table drawn wider than that loses its right-hand columns (Param #) instead of
    # wrapping. Give the console the table's width.
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(SUMMARY_WIDTH)
    try:
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=SUMMARY_WIDTH)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(lines)
