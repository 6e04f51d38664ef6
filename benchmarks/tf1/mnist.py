"""The seed's TF1 MNIST sequence classifier (Hands-On ML ch. 14), ported to `tf.compat.v1`.

Each image is 28 steps of 28 pixels; a `BasicRNNCell` of 150 tanh units run by `dynamic_rnn`;
its final state goes through one dense layer to 10 logits; sparse softmax cross entropy; Adam
1e-3; batch 150; the accuracy (`in_top_k(logits, y, 1)`) on the whole test set after every epoch.
Data: a Keras-format mnist.npz scaled by 1/255, the training images shuffled every epoch with a
seeded permutation (the same stream rnnflow uses).

It needs TensorFlow with the `tf-keras` package and TF_USE_LEGACY_KERAS=1 (Keras 3 has no
`BasicRNNCell`); this program sets the variable itself before importing TensorFlow.

usage: python benchmarks/tf1/mnist.py --mnist PATH --seed 0 --epochs 10 [--train-limit N]
       [--eval-limit N] [--out FILE]
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
    parser.add_argument("--mnist", required=True, help="a Keras-format mnist.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--eval-limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--out", default=None, help="JSON record (default: stdout)")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    import tf_keras  # noqa: F401  (fails clearly when the benchmark extra is missing)

    tf.get_logger().setLevel("ERROR")
    with np.load(args.mnist) as data:
        x_train = data["x_train"][: args.train_limit].astype(np.float32) / 255.0
        y_train = data["y_train"][: args.train_limit].astype(np.int32)
        x_test = data["x_test"][: args.eval_limit].astype(np.float32) / 255.0
        y_test = data["y_test"][: args.eval_limit].astype(np.int32)

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    v1.set_random_seed(args.seed)

    n_steps, n_inputs, n_neurons, n_outputs = 28, 28, 150, 10
    X = v1.placeholder(tf.float32, [None, n_steps, n_inputs])
    y = v1.placeholder(tf.int32, [None])
    basic_cell = v1.nn.rnn_cell.BasicRNNCell(num_units=n_neurons)
    outputs, states = v1.nn.dynamic_rnn(basic_cell, X, dtype=tf.float32)
    logits = v1.layers.dense(states, n_outputs)
    xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    loss = tf.reduce_mean(xentropy)
    training_op = v1.train.AdamOptimizer(learning_rate=1e-3).minimize(loss)
    correct = v1.nn.in_top_k(logits, y, 1)
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))

    batch = _harness.MNIST_BATCH
    n = len(x_train)
    epochs = []
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        start = time.perf_counter()
        for epoch in range(args.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            order = _harness.epoch_permutation(args.seed, epoch, n)
            for i in range(0, n - batch + 1, batch):
                rows = order[i : i + batch]
                sess.run(training_op, feed_dict={X: x_train[rows], y: y_train[rows]})
            t1 = time.perf_counter()
            test_accuracy = float(sess.run(accuracy, feed_dict={X: x_test, y: y_test}))
            t2 = time.perf_counter()
            epochs.append({
                "epoch": epoch + 1,
                "seconds": t2 - t0,
                "train_seconds": t1 - t0,
                "cpu_seconds": time.process_time() - c0,
                "elapsed": t2 - start,
                "test_accuracy": test_accuracy,
            })
            print(f"tf1 mnist epoch {epoch + 1}: {t2 - t0:.2f} s, test accuracy {test_accuracy:.4f}", flush=True)

    _harness.write_record(args.out, {
        "workload": "mnist",
        "variant": "tf1",
        "seed": args.seed,
        "epochs": epochs,
        "train_images": n,
        "test_images": len(x_test),
        "versions": _harness.tensorflow_versions(),
    })


if __name__ == "__main__":
    main()
