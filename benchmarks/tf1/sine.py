"""The seed's TF1 sine-forecast program (Hands-On ML ch. 14), ported to `tf.compat.v1`.

One `BasicRNNCell` of 100 relu units unrolled by `dynamic_rnn` over the 100 steps of
t*sin(t)/3 + 2*sin(5t); the outputs of every step are stacked, projected by one dense layer and
unstacked; MSE; Adam 1e-3; batch 1 (the same window every iteration). As in the book, the MSE is
evaluated every 100 iterations. The losses of the last `--tail` training steps are fetched with
them (the same forward pass) for `tail_mse`, their mean.

It needs TensorFlow with the `tf-keras` package and TF_USE_LEGACY_KERAS=1 (Keras 3 has no
`BasicRNNCell`); this program sets the variable itself before importing TensorFlow.

usage: python benchmarks/tf1/sine.py --seed 0 --iterations 2000 --warmup 200 [--tail 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200, help="iterations before the steady-state clock starts")
    parser.add_argument("--tail", type=int, default=200, help="the last steps whose mean loss is tail_mse")
    parser.add_argument("--out", default=None, help="JSON record (default: stdout)")
    args = parser.parse_args(argv)
    if not 0 < args.tail <= args.iterations:
        parser.error("--tail must be between 1 and --iterations")

    import tensorflow as tf
    import tf_keras  # noqa: F401  (fails clearly when the benchmark extra is missing)

    tf.get_logger().setLevel("ERROR")
    v1 = tf.compat.v1
    v1.disable_eager_execution()
    v1.set_random_seed(args.seed)

    n_steps, n_inputs, n_neurons, n_outputs = _harness.SINE_STEPS, 1, 100, 1
    X = v1.placeholder(tf.float32, [None, n_steps, n_inputs])
    y = v1.placeholder(tf.float32, [None, n_steps, n_outputs])
    cell = v1.nn.rnn_cell.BasicRNNCell(num_units=n_neurons, activation=tf.nn.relu)
    rnn_outputs, states = v1.nn.dynamic_rnn(cell, X, dtype=tf.float32)
    stacked_rnn_outputs = tf.reshape(rnn_outputs, [-1, n_neurons])
    stacked_outputs = v1.layers.dense(stacked_rnn_outputs, n_outputs)
    outputs = tf.reshape(stacked_outputs, [-1, n_steps, n_outputs])
    loss = tf.reduce_mean(tf.square(outputs - y))
    training_op = v1.train.AdamOptimizer(learning_rate=1e-3).minimize(loss)

    x_batch, y_batch = _harness.sine_window()
    feed = {X: x_batch, y: y_batch}
    curve = []
    tail = []
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        cpu0 = time.process_time()
        start = time.perf_counter()
        steady_start = start
        for iteration in range(args.iterations):
            if iteration == args.warmup:
                steady_start = time.perf_counter()
            if iteration % 100 == 0:  # the book's progress print
                curve.append((iteration, float(sess.run(loss, feed_dict=feed))))
            if iteration >= args.iterations - args.tail:
                tail.append(float(sess.run([training_op, loss], feed_dict=feed)[1]))
            else:
                sess.run(training_op, feed_dict=feed)
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
        final_mse = float(sess.run(loss, feed_dict=feed))

    total = end - start
    steady = end - steady_start
    _harness.write_record(args.out, {
        "workload": "sine",
        "variant": "tf1",
        "seed": args.seed,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "train_seconds": total,
        "ms_per_iter_total": 1000 * total / args.iterations,
        "ms_per_iter_steady": 1000 * steady / (args.iterations - args.warmup),
        "cpu_ms_per_iter": 1000 * cpu / args.iterations,
        "final_mse": final_mse,
        "tail": args.tail,
        "tail_mse": sum(tail) / len(tail),
        "curve": curve,
        "versions": _harness.tensorflow_versions(),
    })


if __name__ == "__main__":
    main()
