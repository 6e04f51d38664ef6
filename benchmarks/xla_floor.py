"""The floor under rnnflow's XLA sine timing: the same training step written by hand.

A bare `tf.while_loop` RNN (100 relu units, batch 1, 100 steps, the input projection hoisted out
of the loop, one dense output per step), MSE, Adam 1e-3, 100 steps per
`tf.function(jit_compile=True)` call: no Keras layers, no rnnflow, no tracking. Two backward
passes: `autodiff` (TensorFlow differentiates the loop: the floor of `model.loop: keras`) and
`manual` (a backward loop written by hand, the recurrent-weight gradient one matrix product after
it: the floor of `model.loop: scan`). If rnnflow's steady-state ms/iter is close to the floor of
its loop, the remaining time is XLA's CPU while loop itself, not rnnflow's overhead.

usage: python benchmarks/xla_floor.py [--backward autodiff|manual|both] [--calls 18] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

STEPS, UNITS, PER_CALL = 100, 100, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=18, help="timed calls of 100 steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backward", choices=["autodiff", "manual", "both"], default="both")
    args = parser.parse_args()
    for backward in ["autodiff", "manual"] if args.backward == "both" else [args.backward]:
        measure(backward, args.calls, args.repeats)


def measure(backward: str, calls: int, repeats: int) -> None:
    """Time one backward pass: `repeats` times `calls` calls of 100 steps, after a first call."""
    tf.random.set_seed(0)
    t = np.linspace(0, 15, STEPS + 1).astype("float32")
    series = t * np.sin(t) / 3 + 2 * np.sin(5 * t)
    x = tf.constant(series[:-1].reshape(1, STEPS, 1))
    y = tf.constant(series[1:].reshape(1, STEPS, 1))
    w = tf.Variable(tf.random.normal((1, UNITS)) * 0.1)
    u = tf.Variable(tf.random.normal((UNITS, UNITS)) * 0.1)
    b = tf.Variable(tf.zeros(UNITS))
    v = tf.Variable(tf.random.normal((UNITS, 1)) * 0.1)
    c = tf.Variable(tf.zeros(1))
    variables = [w, u, b, v, c]
    optimizer = tf.keras.optimizers.Adam(1e-3)
    optimizer.build(variables)

    def recurrence(inputs, u):
        def body(i, h, outputs):
            h = tf.nn.relu(inputs[i] + h @ u)
            return i + 1, h, outputs.write(i, h)

        loop = (0, tf.zeros((1, UNITS)), tf.TensorArray(tf.float32, STEPS))
        return tf.while_loop(lambda i, *_: i < STEPS, body, loop, maximum_iterations=STEPS)[2].stack()

    @tf.custom_gradient
    def recurrence_manual(inputs, u):
        states = recurrence(inputs, u)

        def grad(d_states):
            def body(i, carry, d_pre):
                t = STEPS - 1 - i
                d = (d_states[t] + carry) * tf.cast(states[t] > 0, tf.float32)  # through the relu
                return i + 1, d @ tf.transpose(u), d_pre.write(t, d)

            loop = (0, tf.zeros((1, UNITS)), tf.TensorArray(tf.float32, STEPS))
            d_pre = tf.while_loop(lambda i, *_: i < STEPS, body, loop, maximum_iterations=STEPS)[2].stack()
            before = tf.concat([tf.zeros_like(states[:1]), states[:-1]], axis=0)
            return d_pre, tf.einsum("tbh,tbk->hk", before, d_pre)

        return states, grad

    def forward():
        inputs = tf.einsum("btk,kh->tbh", x, w) + b
        outputs = recurrence_manual(inputs, tf.convert_to_tensor(u)) if backward == "manual" else recurrence(inputs, u)
        states = tf.reshape(tf.transpose(outputs, (1, 0, 2)), (-1, UNITS))
        return tf.reshape(states @ v + c, (1, STEPS, 1))

    @tf.function(jit_compile=True)
    def train_chunk():
        def one(i, _):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((forward() - y) ** 2)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return i + 1, loss

        return tf.while_loop(lambda i, _: i < PER_CALL, one, (0, 0.0), maximum_iterations=PER_CALL)[1]

    start = time.perf_counter()
    train_chunk().numpy()
    print(f"{backward}: first call (trace + compile + {PER_CALL} steps): {time.perf_counter() - start:.2f} s")
    for repeat in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            loss = train_chunk()
        loss.numpy()
        ms = 1000 * (time.perf_counter() - start) / (calls * PER_CALL)
        print(f"{backward}: repeat {repeat + 1}: {ms:.2f} ms/iter over {calls * PER_CALL} steps, loss {float(loss):.3g}")


if __name__ == "__main__":
    main()
