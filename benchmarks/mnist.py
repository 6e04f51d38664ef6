"""The MNIST workload: rnnflow running specs/mnist_classifier.yaml, or plain Keras `fit` on the same
model. One process, one JSON record.

Timed mode trains for `--epochs` epochs and records, after every epoch, the wall time since
training started and the accuracy on the test set (every program evaluates the whole test set
after every epoch, and that evaluation is inside the epoch times). Curve mode (`--curve N`)
records the exact loss of each of the first N steps for every seed in `--seeds`.

Every program sees the same batches: the training images of epoch e are shuffled with
`numpy.random.default_rng([seed, e])`, the stream rnnflow's trainer draws its batches from.

usage:
  python benchmarks/mnist.py rnnflow --jit false --unroll false --seed 0 --epochs 10 --mnist PATH [--out F]
  python benchmarks/mnist.py fit --seed 0 --epochs 10 --mnist PATH [--out F]
  python benchmarks/mnist.py rnnflow|fit --curve 50 --seeds 0 --mnist PATH [...]
  (--train-limit N / --eval-limit N use the first N training / test images: quick runs only)
"""

from __future__ import annotations

import argparse
import os
import time

import _harness
from _common import (
    Recorder,
    compile_plain,
    keras,
    np,
    rnnflow_initial_digest,
    seed_keras,
    temporary_mlflow_store,
    versions,
    weights_digest,
)

SPEC = _harness.SPECS / "mnist_classifier.yaml"
CURVE_OVERRIDES = ["train.epochs=null", "train.log_every=1", "evaluate.every_epoch=false", "evaluate.steps=[]",
                   "tracking.log_model=false"]


def data_overrides(train_limit: int | None, eval_limit: int | None) -> list[str]:
    out = []
    if train_limit:
        out.append(f"data.train_limit={train_limit}")
    if eval_limit:
        out.append(f"data.eval_limit={eval_limit}")
    return out


def rnnflow_overrides(jit: bool, unroll: bool) -> list[str]:
    return [*_harness.MNIST_AS_IN_THE_BOOK, f"train.jit_compile={str(jit).lower()}",
            f"model.unroll={str(unroll).lower()}"]


def rnnflow_timed(seed: int, epochs: int, jit: bool, unroll: bool, limits: list[str]) -> dict:
    """One rnnflow run of the spec; per-epoch times and test accuracy through its callback hooks."""
    from rnnflow.runner import run

    overrides = [f"seed={seed}", f"train.epochs={epochs}", *rnnflow_overrides(jit, unroll), *limits]
    recorder = Recorder()
    with temporary_mlflow_store():
        result = run(SPEC, overrides, callbacks=[recorder])
    return {"overrides": overrides, "epochs": recorder.epoch_rows(), "train_seconds": recorder.seconds,
            "cpu_seconds": recorder.cpu_seconds, "rnnflow_metrics": result.metrics, "curve": recorder.losses()}


def rnnflow_curve(seed: int, steps: int, jit: bool, unroll: bool, limits: list[str]) -> dict:
    """The loss of each of the first `steps` iterations of an rnnflow run."""
    from rnnflow.runner import run

    overrides = [f"seed={seed}", f"train.iterations={steps}", *rnnflow_overrides(jit, unroll), *limits,
                 *CURVE_OVERRIDES]
    recorder = Recorder()
    with temporary_mlflow_store():
        run(SPEC, overrides, callbacks=[recorder])
    losses = recorder.losses()
    assert [at for at, _ in losses] == list(range(1, steps + 1)), "expected one logged point per step"
    return {"seed": seed, "initial_weights": rnnflow_initial_digest(SPEC, [f"seed={seed}", *limits]),
            "losses": [loss for _, loss in losses]}


def load(path: str, train_limit: int | None, eval_limit: int | None):
    """MNIST scaled as rnnflow's `mnist` source scales it (float32, times 1/255)."""
    with np.load(path) as archive:
        x_train, y_train = archive["x_train"][:train_limit], archive["y_train"][:train_limit]
        x_test, y_test = archive["x_test"][:eval_limit], archive["y_test"][:eval_limit]
    scale = 1 / 255.0
    return (x_train.astype(np.float32) * scale, y_train.astype(np.int32),
            x_test.astype(np.float32) * scale, y_test.astype(np.int32))


def plain_model(seed: int) -> keras.Model:
    """SimpleRNN(150, tanh) over the 28 rows, its last output to Dense(10) logits."""
    keras.backend.clear_session()
    seed_keras(seed)
    model = keras.Sequential([
        keras.Input((28, 28)),
        keras.layers.SimpleRNN(150, activation="tanh"),
        keras.layers.Dense(10),
    ])
    compile_plain(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit_timed(seed: int, epochs: int, data) -> dict:
    """Plain `fit`, one call per epoch on that epoch's shuffled images; test accuracy after each."""
    x_train, y_train, x_test, y_test = data
    model = plain_model(seed)
    rows = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = _harness.epoch_permutation(seed, epoch, len(x_train))
        history = model.fit(x_train[order], y_train[order], batch_size=_harness.MNIST_BATCH, epochs=1,
                            shuffle=False, verbose=0)
        t1 = time.perf_counter()
        logits = model.predict(x_test, batch_size=1024, verbose=0)
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
        t2 = time.perf_counter()
        rows.append({"epoch": epoch + 1, "seconds": t2 - t0, "train_seconds": t1 - t0, "elapsed": t2 - start,
                     "test_accuracy": accuracy, "train_loss": float(history.history["loss"][-1])})
        print(f"fit mnist epoch {epoch + 1}: {t2 - t0:.2f} s, test accuracy {accuracy:.4f}", flush=True)
    end = time.perf_counter()
    return {"epochs": rows, "train_seconds": end - start, "cpu_seconds": time.process_time() - cpu0}


def fit_curve(seed: int, steps: int, data) -> dict:
    """The loss of each of the first `steps` batches (`train_on_batch` runs `fit`'s compiled train
    step and returns that step's loss)."""
    x_train, y_train, _, _ = data
    model = plain_model(seed)
    initial = weights_digest(model.get_weights())
    batch = _harness.MNIST_BATCH
    # rnnflow's batch stream runs on into the next epoch's permutation (a small --train-limit).
    passes = -(-steps * batch // len(x_train))
    order = np.concatenate([_harness.epoch_permutation(seed, e, len(x_train)) for e in range(passes)])
    losses = []
    for k in range(steps):
        rows = order[k * batch : (k + 1) * batch]
        losses.append(float(model.train_on_batch(x_train[rows], y_train[rows])))
    return {"seed": seed, "initial_weights": initial, "losses": losses}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("program", choices=["rnnflow", "fit"])
    parser.add_argument("--mnist", required=True, help="a Keras-format mnist.npz")
    parser.add_argument("--jit", choices=["true", "false"], default="false", help="rnnflow: train.jit_compile")
    parser.add_argument("--unroll", choices=["true", "false"], default="false", help="rnnflow: model.unroll")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--eval-limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--curve", type=int, default=None, metavar="N", help="record the first N step losses")
    parser.add_argument("--seeds", default="0", help="curve mode: comma-separated seeds")
    parser.add_argument("--out", default=None, help="JSON record (default: stdout)")
    args = parser.parse_args(argv)
    os.environ["RNNFLOW_MNIST"] = os.path.abspath(args.mnist)  # where rnnflow's mnist source looks
    jit, unroll = args.jit == "true", args.unroll == "true"
    if args.program == "rnnflow":
        variant = "rnnflow_" + ("xla" if jit else "graph") + ("_unroll" if unroll else "")
    else:
        variant = "fit"
    limits = data_overrides(args.train_limit, args.eval_limit)

    record: dict = {"workload": "mnist", "variant": variant}
    data = load(args.mnist, args.train_limit, args.eval_limit) if args.program == "fit" else None
    if args.curve:
        seeds = [int(s) for s in args.seeds.split(",")]
        if args.program == "rnnflow":
            runs = [rnnflow_curve(s, args.curve, jit, unroll, limits) for s in seeds]
        else:
            runs = [fit_curve(s, args.curve, data) for s in seeds]
        record.update(mode="curve", steps=args.curve, runs=runs)
    else:
        record.update(mode="timed", seed=args.seed)
        if args.program == "rnnflow":
            record.update(rnnflow_timed(args.seed, args.epochs, jit, unroll, limits))
        else:
            record.update(fit_timed(args.seed, args.epochs, data))
    record["versions"] = versions()
    _harness.write_record(args.out, record)


if __name__ == "__main__":
    main()
