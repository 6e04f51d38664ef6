"""Variable-length sequences, zero-padded to one length, with their true lengths.

Inputs past a sequence's length are ignored, as TF1 `dynamic_rnn(sequence_length=...)` does:
outputs there are zero and the final state is the last valid step's. Targets may end with an
end-of-sequence (EOS) token; positions after it carry no loss.
"""

from typing import Literal

import pydantic
from pydantic import Field

from rnnflow.data.base import DataBundle, LoadContext, SourceSpec, Split, Task
from rnnflow.data.inline import nested_shape
from rnnflow.spec.registry import SOURCES
from rnnflow.spec.base import Section, at


class GeneratedSequences(Section):
    """Random variable-length sequences for a toy task.

    `sum`: inputs of random length (standard normal values, zero-padded); the target is the
    sum of the valid inputs (one value per sequence). Needs the input lengths to mask padding.

    `eos_copy`: random symbols 1..vocab_size; a 0 in the input marks where the output must stop.
    The target copies each symbol until that point, then emits the EOS class, then nothing:
    positions after the EOS carry no loss and no metric.
    """

    task: Literal["sum", "eos_copy"] = Field("sum", description="Which toy task to generate.")
    count: int = Field(1000, gt=0, le=10_000_000, description="Training sequences.")
    eval_count: int = Field(200, gt=0, le=10_000_000, description="Evaluation sequences.")
    min_length: int = Field(1, gt=0, le=100_000, description="Shortest sequence (steps).")
    max_length: int = Field(10, gt=0, le=100_000, description="Longest sequence (steps).")
    vocab_size: int = Field(8, gt=1, le=10_000, description="Symbols (eos_copy).")

    @pydantic.model_validator(mode="after")
    def _check_lengths(self) -> "GeneratedSequences":
        if self.min_length > self.max_length:
            raise at("min_length", f"must not exceed max_length ({self.max_length})")
        return self


@SOURCES.register
class PaddedSource(SourceSpec):
    """Padded variable-length sequences: given (`sequences`, or `inputs` plus `lengths`) or generated."""

    type: Literal["padded"] = "padded"
    sequences: list | None = Field(None, description="Ragged sequences [seq][step][feature]; padded here.")
    inputs: list | None = Field(None, description="Already padded inputs (batch, time, features).")
    lengths: list[int] | None = Field(None, description="Valid steps of each row of `inputs`.")
    generate: GeneratedSequences | None = Field(None, description="Generate sequences instead.")

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> "PaddedSource":
        given = [k for k in ("sequences", "inputs", "generate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of sequences, inputs (with lengths) or generate"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.sequences is not None:
            if not isinstance(self.sequences, list) or not self.sequences:
                raise at("sequences", "must be a non-empty list of sequences")
            widths = set()
            for i, seq in enumerate(self.sequences):
                shape = nested_shape(seq, f"sequences[{i}]")
                if len(shape) not in (1, 2):
                    raise at(f"sequences[{i}]", "each step must be a number or a list of numbers")
                widths.add(shape[1] if len(shape) == 2 else 1)
            if len(widths) != 1:
                raise at("sequences", "every step must have the same number of features")
        if self.inputs is not None:
            shape = nested_shape(self.inputs, "inputs")
            if len(shape) != 3:
                raise at("inputs", f"must be 3-dimensional (batch, time, features), got {len(shape)}")
            if self.lengths is None:
                raise at("lengths", "padded inputs need their lengths")
            if len(self.lengths) != shape[0]:
                raise at("lengths", f"gives {len(self.lengths)} lengths for a batch of {shape[0]}")
            for i, length in enumerate(self.lengths):
                if not 1 <= length <= shape[1]:
                    raise at(f"lengths[{i}]", f"must be between 1 and {shape[1]} (got {length})")
        elif self.lengths is not None:
            raise at("lengths", "lengths go with inputs (sequences carry their own)")
        return self

    @property
    def task(self) -> Task:
        if self.generate is not None and self.generate.task == "eos_copy":
            return "classification"
        return "regression"

    @property
    def has_targets(self) -> bool:
        return self.generate is not None

    @property
    def sequence_targets(self) -> bool | None:
        if self.generate is None:
            return None
        return self.generate.task == "eos_copy"

    def load(self, context: LoadContext) -> DataBundle:
        import numpy as np

        if self.generate is not None:
            return _generate(self.generate, context.seed)
        if self.sequences is not None:
            seqs = [np.asarray(s, dtype=np.float32).reshape(len(s), -1) for s in self.sequences]
            lengths = np.array([len(s) for s in seqs], dtype=np.int32)
            x = np.zeros((len(seqs), lengths.max(), seqs[0].shape[1]), dtype=np.float32)
            for i, seq in enumerate(seqs):
                x[i, : len(seq)] = seq
        else:
            x = np.asarray(self.inputs, dtype=np.float32)
            lengths = np.asarray(self.lengths, dtype=np.int32)
        split = Split(x=x, lengths=lengths)
        return DataBundle(
            train=split, test=split, task="regression", output_size=x.shape[2], sequence_targets=True,
            info={"sequences": len(x), "max_length": int(x.shape[1])},
        )


def _generate(spec: GeneratedSequences, seed: int) -> DataBundle:
    import numpy as np

    def make(count: int, rng) -> Split:
        lengths = rng.integers(spec.min_length, spec.max_length + 1, count).astype(np.int32)
        if spec.task == "sum":
            x = rng.standard_normal((count, spec.max_length, 1)).astype(np.float32)
            x[np.arange(spec.max_length)[None, :] >= lengths[:, None]] = 0.0
            return Split(x=x, y=x.sum(axis=1), lengths=lengths)
        steps = spec.max_length + 1  # room for the EOS after the longest output
        symbols = rng.integers(1, spec.vocab_size + 1, (count, steps))
        symbols[np.arange(count), lengths] = 0  # the stop marker
        x = np.eye(spec.vocab_size + 1, dtype=np.float32)[symbols]
        eos = spec.vocab_size
        position = np.arange(steps)[None, :]
        y = np.where(position < lengths[:, None], symbols - 1, eos)
        weights = (position <= lengths[:, None]).astype(np.float32)
        # After the EOS the target is padding: any value, it carries no weight. Random values make
        # any leak of padded positions into the loss visible.
        y = np.where(weights > 0, y, rng.integers(0, eos + 1, y.shape)).astype(np.int32)
        return Split(x=x, y=y, weights=weights)

    train = make(spec.count, np.random.default_rng(seed))
    evaluation = make(spec.eval_count, np.random.default_rng(seed + 1))
    if spec.task == "sum":
        return DataBundle(train=train, test=evaluation, task="regression", output_size=1,
                          sequence_targets=False, info={"task": "sum"})
    return DataBundle(train=train, test=evaluation, task="classification", output_size=spec.vocab_size + 1,
                      sequence_targets=True, info={"task": "eos_copy", "eos_class": spec.vocab_size})
