"""The sine-forecast workload: rnnflow running specs/sine_forecast.yaml, or plain Keras `fit` on
the same model. One process, one JSON record.

Timed mode trains for `--iterations` steps and reports the wall time per iteration over all of
them (including tracing and XLA compilation) and over the iterations after `--warmup` (steady
state), and the final training MSE twice: after the last step (`final_mse`, a snapshot) and as
the mean training loss of the last `--tail` steps (`tail_mse`, what Keras reports as the loss of
an epoch of those steps). Curve mode (`--curve N`) records the exact loss of each of
the first N steps for every seed in `--seeds`, for the learning check.

usage:
  python benchmarks/sine.py rnnflow --jit true|false [--loop keras|scan] --seed 0 --iterations 2000 --warmup 200
                                [--tail 200] [--out F]
  python benchmarks/sine.py fit --seed 0 --iterations 2000 --warmup 200 [--tail 200] [--out F]
  python benchmarks/sine.py rnnflow|fit --curve 50 --seeds 0,1,2 [--jit true|false] [--out F]
"""

from __future__ import annotations

import argparse
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
    tf,
    versions,
    weights_digest,
)

SPEC = _harness.SPECS / "sine_forecast.yaml"

# The overrides that make a run short and quiet: only the training matters for the curve.
CURVE_OVERRIDES = ["train.log_every=1", "evaluate.steps=[]", "tracking.log_model=false"]


def rnnflow_timed(seed: int, iterations: int, warmup: int, tail: int, jit: bool, log_every: int,
                  loop: list[str]) -> dict:
    """One rnnflow run of the spec, timed through its callback hooks."""
    from rnnflow.runner import run

    for name, value in (("--warmup", warmup), ("--tail", tail)):
        if value % log_every:
            raise SystemExit(f"{name} {value} must be a multiple of log_every {log_every}")
    overrides = [f"seed={seed}", f"train.iterations={iterations}", f"train.log_every={log_every}",
                 f"train.jit_compile={str(jit).lower()}", *loop]
    recorder = Recorder()
    with temporary_mlflow_store():
        result = run(SPEC, overrides, callbacks=[recorder])
    steady = recorder.seconds - recorder.time_at(warmup)
    # Each logged point is the mean loss of the log_every steps before it, so the mean of the
    # points after `iterations - tail` is the mean of the last `tail` step losses.
    last = [loss for at, loss in recorder.losses() if at > iterations - tail]
    assert len(last) == tail // log_every, f"expected {tail // log_every} logged points in the tail, got {len(last)}"
    return {
        "overrides": overrides,
        "train_seconds": recorder.seconds,
        "ms_per_iter_total": 1000 * recorder.seconds / iterations,
        "ms_per_iter_steady": 1000 * steady / (iterations - warmup),
        "cpu_ms_per_iter": 1000 * recorder.cpu_seconds / iterations,
        "final_mse": result.metrics["train_mse"],
        "tail_mse": float(np.mean(last)),
        "rnnflow_metrics": result.metrics,
        "curve": recorder.losses(),
    }


def rnnflow_curve(seed: int, steps: int, jit: bool) -> dict:
    """The loss of each of the first `steps` iterations of an rnnflow run (one step per log point)."""
    from rnnflow.runner import run

    overrides = [f"seed={seed}", f"train.iterations={steps}", f"train.jit_compile={str(jit).lower()}",
                 *CURVE_OVERRIDES]
    recorder = Recorder()
    with temporary_mlflow_store():
        run(SPEC, overrides, callbacks=[recorder])
    losses = recorder.losses()
    assert [at for at, _ in losses] == list(range(1, steps + 1)), "expected one logged point per step"
    return {"seed": seed, "initial_weights": rnnflow_initial_digest(SPEC, [f"seed={seed}"]),
            "losses": [loss for _, loss in losses]}


def plain_model(seed: int) -> keras.Model:
    """SimpleRNN(100, relu) over the 100 steps, one Dense(1) applied at every step."""
    keras.backend.clear_session()
    seed_keras(seed)
    model = keras.Sequential([
        keras.Input((_harness.SINE_STEPS, 1)),
        keras.layers.SimpleRNN(100, activation="relu", return_sequences=True),
        keras.layers.Dense(1),
    ])
    compile_plain(model, "mse")
    return model


def fit_timed(seed: int, iterations: int, warmup: int, tail: int) -> dict:
    """Plain `fit` on a repeated dataset of the one window: a warm-up call, the middle, and the
    last `tail` steps, whose epoch loss (the mean of their step losses) is `tail_mse`."""
    if warmup + tail >= iterations:
        raise SystemExit(f"--warmup {warmup} plus --tail {tail} must be below --iterations {iterations}")
    x, y = _harness.sine_window()
    model = plain_model(seed)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    cpu0 = time.process_time()
    start = time.perf_counter()
    first = model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
    middle = time.perf_counter()
    rest = model.fit(data, epochs=1, steps_per_epoch=iterations - warmup - tail, verbose=0)
    last = model.fit(data, epochs=1, steps_per_epoch=tail, verbose=0)
    end = time.perf_counter()
    cpu = time.process_time() - cpu0
    prediction = np.asarray(model(x, training=False))
    return {
        "train_seconds": end - start,
        "ms_per_iter_total": 1000 * (end - start) / iterations,
        "ms_per_iter_steady": 1000 * (end - middle) / (iterations - warmup),
        "cpu_ms_per_iter": 1000 * cpu / iterations,
        "final_mse": float(np.mean((prediction - y) ** 2)),
        "tail_mse": float(last.history["loss"][-1]),
        "curve": [(warmup, float(first.history["loss"][-1])), (iterations - tail, float(rest.history["loss"][-1])),
                  (iterations, float(last.history["loss"][-1]))],
    }


def fit_curve(seed: int, steps: int) -> dict:
    """The loss of each of the first `steps` gradient steps of plain Keras (`train_on_batch`
    runs the same compiled train step as `fit` and returns that step's loss)."""
    x, y = _harness.sine_window()
    model = plain_model(seed)
    initial = weights_digest(model.get_weights())
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    return {"seed": seed, "initial_weights": initial, "losses": losses}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("program", choices=["rnnflow", "fit"])
    parser.add_argument("--jit", choices=["true", "false"], default="true", help="rnnflow: train.jit_compile")
    parser.add_argument("--loop", choices=["keras", "scan"], default=None,
                        help="rnnflow: model.loop (default: as the spec is written)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200, help="iterations before the steady-state clock starts")
    parser.add_argument("--tail", type=int, default=200, help="the last steps whose mean loss is tail_mse")
    parser.add_argument("--log-every", type=int, default=20, help="rnnflow: train.log_every (its default at 2000)")
    parser.add_argument("--curve", type=int, default=None, metavar="N", help="record the first N step losses")
    parser.add_argument("--seeds", default="0", help="curve mode: comma-separated seeds")
    parser.add_argument("--out", default=None, help="JSON record (default: stdout)")
    args = parser.parse_args(argv)
    if args.tail <= 0:
        parser.error("--tail must be at least 1")
    jit = args.jit == "true"
    variant = ("rnnflow_xla" if jit else "rnnflow_graph") if args.program == "rnnflow" else "fit"
    loop = [f"model.loop={args.loop}"] if args.loop else []
    if args.loop and args.program == "rnnflow":
        variant += f"_{args.loop}_loop"

    record: dict = {"workload": "sine", "variant": variant}
    if args.curve:
        seeds = [int(s) for s in args.seeds.split(",")]
        runs = [rnnflow_curve(s, args.curve, jit) if args.program == "rnnflow" else fit_curve(s, args.curve)
                for s in seeds]
        record.update(mode="curve", steps=args.curve, runs=runs)
    else:
        record.update(mode="timed", seed=args.seed, iterations=args.iterations, warmup=args.warmup, tail=args.tail)
        if args.program == "rnnflow":
            record.update(rnnflow_timed(args.seed, args.iterations, args.warmup, args.tail, jit, args.log_every, loop))
        else:
            record.update(fit_timed(args.seed, args.iterations, args.warmup, args.tail))
    record["versions"] = versions()
    _harness.write_record(args.out, record)


if __name__ == "__main__":
    main()
