"""Run the rnnflow benchmark: rnnflow against plain Keras `fit` and the seed's TF1 programs.

Every measurement is a separate process. Within a repetition the programs run one after the
other in an order rotated from one repetition to the next, so that a change of load on the
machine falls on all of them alike. The results (every process's JSON record, the summaries,
the target verdicts) go to OUT/results.json and OUT/results.md; each process's output is kept in
OUT/raw/. A full run (not --quick) into the default folder also updates the table in
benchmarks/README.md.

Workloads:
  sine   specs/sine_forecast.yaml for --iterations steps, with train.jit_compile true and false,
         and with XLA but model.loop=keras (what scan adds, and a control); plain fit; the TF1
         program. One repetition per seed (seeds 0 .. reps-1).
         Learning check: the exact losses of the first 50 steps of rnnflow's XLA and graph paths
         and of plain Keras, for every seed. End of training: the mean loss of the last steps
         (200 of 2000; quick: 40 of 200), seed by seed against fit; --mse-seeds more seeds (reps .. reps+N-1) run the spec,
         fit and Keras' loop under XLA for that comparison only.
  mnist  specs/mnist_classifier.yaml as the book trains it (_harness.MNIST_AS_IN_THE_BOOK: no
         validation split, a constant rate) for --mnist-epochs epochs, as written and with XLA and
         model.unroll; plain fit; the TF1 program. Test accuracy after every epoch.
         Learning check: the first 50 step losses, as for sine.

usage: python benchmarks/run.py [--quick] [--reps N] [--mse-seeds N] [--only sine|mnist] [--out DIR]

Exit status: 0 when every process ran (whatever the verdicts), 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import _harness
import report

HERE = _harness.HERE
DEFAULT_OUT = report.DEFAULT_RESULTS
QUICK_OUT = HERE / "results" / "quick"

FULL = {"iterations": 2000, "warmup": 200, "tail": 200, "reps": 5, "mse_seeds": 10, "curve_steps": 50,
        "mnist_epochs": 10, "mnist_reps": 3, "train_limit": None, "eval_limit": None}
# Quick: only enough to exercise every program and every line of the report.
QUICK = {"iterations": 200, "warmup": 100, "tail": 40, "reps": 2, "mse_seeds": 1, "curve_steps": 50,
         "mnist_epochs": 2, "mnist_reps": 1, "train_limit": 6000, "eval_limit": 2000}
LOG_EVERY = 20  # rnnflow's default log_every (and steps per compiled call) for 2000 iterations


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--quick", action="store_true", help="tiny runs that check the harness, not measurements")
    parser.add_argument("--reps", type=int, default=None, help="sine repetitions = seeds (default 5; quick 2)")
    parser.add_argument("--mse-seeds", type=int, default=None,
                        help="sine seeds beyond --reps for the end-of-training comparison only (default 10; quick 1)")
    parser.add_argument("--mnist-reps", type=int, default=None, help="MNIST repetitions = seeds (default 3; quick 1)")
    parser.add_argument("--mnist-epochs", type=int, default=None, help="epochs per MNIST run (default 10; quick 2)")
    parser.add_argument("--iterations", type=int, default=None, help="sine iterations (default 2000; quick 200)")
    parser.add_argument("--only", choices=["sine", "mnist"], default=None, help="run one workload")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"results folder (default {DEFAULT_OUT.relative_to(_harness.REPO)}; quick: "
                             f"{QUICK_OUT.relative_to(_harness.REPO)})")
    parser.add_argument("--mnist", default=None,
                        help="mnist.npz (default: $RNNFLOW_MNIST, then ~/.keras/datasets/mnist.npz)")
    parser.add_argument("--tf1-python", default=os.environ.get("RNNFLOW_TF1_PYTHON", sys.executable),
                        help="Python with tensorflow + tf-keras for the TF1 programs "
                             "(default: $RNNFLOW_TF1_PYTHON, else this Python)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a process is stopped")
    parser.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    config = dict(QUICK if args.quick else FULL)
    for key in ("reps", "mse_seeds", "mnist_reps", "mnist_epochs", "iterations"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if config["warmup"] + config["tail"] >= config["iterations"] or config["iterations"] % LOG_EVERY:
        # A last chunk of another size would cost rnnflow's XLA path one more compilation.
        raise SystemExit(f"--iterations must be a multiple of {LOG_EVERY} above the warm-up and the tail "
                         f"({config['warmup']} + {config['tail']} iterations)")
    config["quick"] = args.quick
    config["seeds"] = list(range(config["reps"]))
    config["extra_mse_seeds"] = list(range(config["reps"], config["reps"] + config["mse_seeds"]))
    config["mnist_seeds"] = list(range(config["mnist_reps"]))
    config["workloads"] = [args.only] if args.only else ["sine", "mnist"]
    return config


def find_mnist(explicit: str | None) -> str:
    """The MNIST file, looked for as rnnflow looks for it when a spec gives no path."""
    candidates = [explicit, os.environ.get("RNNFLOW_MNIST"), str(Path.home() / ".keras" / "datasets" / "mnist.npz")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    raise SystemExit("no mnist.npz: pass --mnist PATH or set $RNNFLOW_MNIST (a Keras-format mnist.npz)")


def check_tf1_python(python: str) -> None:
    """Fail early, and say how to fix it, when the TF1 programs' Python lacks tf-keras."""
    probe = subprocess.run([python, "-c", "import tf_keras, tensorflow as tf; "
                                          "tf.compat.v1.nn.rnn_cell.BasicRNNCell(1)"],
                           env=tf1_env(), capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        last = probe.stderr.strip().splitlines()[-1:] or [""]
        raise SystemExit(f"the TF1 programs need tensorflow and tf-keras in {python} ({last[0]}):\n"
                         "  pip install -e '.[benchmark]', or point --tf1-python at a Python that has them")


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_harness.REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TF_USE_LEGACY_KERAS", None)  # rnnflow and plain fit are Keras 3
    return env


def tf1_env() -> dict[str, str]:
    env = base_env()
    env["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.nn.rnn_cell & co. come from tf-keras
    return env


def rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def spec_settings(name: str) -> tuple[bool, bool]:
    """(train.jit_compile, model.unroll) as a spec file is written."""
    from rnnflow.spec import load_spec

    spec = load_spec(_harness.SPECS / name)
    return spec.train.jit_compile, spec.model.unroll


def sine_jobs(config: dict, python: str, tf1_python: str) -> tuple[list[dict], str, list[str]]:
    jit, _ = spec_settings("sine_forecast.yaml")
    spec_variant = "rnnflow_xla" if jit else "rnnflow_graph"
    script, tf1 = str(HERE / "sine.py"), str(HERE / "tf1" / "sine.py")
    n, w = config["iterations"], config["warmup"]
    seeds = ",".join(map(str, config["seeds"]))
    curve = ["--curve", str(config["curve_steps"]), "--seeds", seeds]
    jobs = [
        job("sine", "rnnflow_xla", "curve", [python, script, "rnnflow", "--jit", "true", *curve]),
        job("sine", "rnnflow_graph", "curve", [python, script, "rnnflow", "--jit", "false", *curve]),
        job("sine", "fit", "curve", [python, script, "fit", *curve]),
    ]
    common = ["--iterations", str(n), "--warmup", str(w), "--tail", str(config["tail"])]
    rnnflow = [python, script, "rnnflow", "--log-every", str(LOG_EVERY), *common]

    def programs(seed: int, mode: str) -> list[dict]:
        s = ["--seed", str(seed)]
        out = [
            job("sine", "rnnflow_xla", mode, [*rnnflow, "--jit", "true", *s], seed),
            # Keras' time loop under XLA: what model.loop=scan adds, and a control for the
            # end-of-training comparison (same automatic differentiation as fit, only compiled).
            job("sine", "rnnflow_xla_keras_loop", mode, [*rnnflow, "--jit", "true", "--loop", "keras", *s], seed),
            job("sine", "fit", mode, [python, script, "fit", *s, *common], seed),
        ]
        if mode == "timed":
            out.insert(1, job("sine", "rnnflow_graph", mode, [*rnnflow, "--jit", "false", *s], seed))
            out.append(job("sine", "tf1", mode, [tf1_python, tf1, *s, *common], seed, tf1=True))
        return out

    for rep, seed in enumerate(config["seeds"]):
        jobs += rotated(programs(seed, "timed"), rep)
    # More seeds for the end-of-training comparison only (their timings stay out of the tables).
    for rep, seed in enumerate(config["extra_mse_seeds"]):
        jobs += rotated(programs(seed, "mse"), rep)
    return jobs, spec_variant, ["rnnflow_xla"]


def mnist_jobs(config: dict, python: str, tf1_python: str, mnist: str) -> tuple[list[dict], str, list[str]]:
    jit, unroll = spec_settings("mnist_classifier.yaml")
    settings_of = {"rnnflow_graph": (False, False), "rnnflow_xla_unroll": (True, True)}
    spec_variant = "rnnflow_" + ("xla" if jit else "graph") + ("_unroll" if unroll else "")
    settings_of.setdefault(spec_variant, (jit, unroll))
    compiled = [v for v, (j, u) in settings_of.items() if j]
    script, tf1 = str(HERE / "mnist.py"), str(HERE / "tf1" / "mnist.py")
    limits = []
    if config["train_limit"]:
        limits += ["--train-limit", str(config["train_limit"])]
    if config["eval_limit"]:
        limits += ["--eval-limit", str(config["eval_limit"])]
    data = ["--mnist", mnist, *limits]
    seeds = ",".join(map(str, config["mnist_seeds"]))
    steps = str(config["curve_steps"])

    def flags(variant: str) -> list[str]:
        j, u = settings_of[variant]
        return ["--jit", str(j).lower(), "--unroll", str(u).lower()]

    jobs = [job("mnist", v, "curve", [python, script, "rnnflow", *flags(v), "--curve", steps, "--seeds", seeds, *data])
            for v in settings_of]
    jobs.append(job("mnist", "fit", "curve", [python, script, "fit", "--curve", steps, "--seeds", seeds, *data]))
    epochs = ["--epochs", str(config["mnist_epochs"])]
    for rep, seed in enumerate(config["mnist_seeds"]):
        s = ["--seed", str(seed)]
        timed = [job("mnist", v, "timed", [python, script, "rnnflow", *flags(v), *s, *epochs, *data], seed)
                 for v in settings_of]
        timed.append(job("mnist", "fit", "timed", [python, script, "fit", *s, *epochs, *data], seed))
        timed.append(job("mnist", "tf1", "timed", [tf1_python, tf1, *s, *epochs, *data], seed, tf1=True))
        jobs += rotated(timed, rep)
    return jobs, spec_variant, compiled


def job(workload: str, variant: str, mode: str, argv: list[str], seed: int | None = None, tf1: bool = False) -> dict:
    name = f"{workload}-{variant}-{mode}" + (f"-seed{seed}" if seed is not None else "")
    return {"name": name, "workload": workload, "variant": variant, "mode": mode, "argv": argv, "tf1": tf1}


def run_job(spec: dict, raw: Path, timeout: float) -> dict:
    """Run one benchmark process; return its record with the process's wall time and the load."""
    out = raw / f"{spec['name']}.json"
    log = raw / f"{spec['name']}.log"
    out.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as handle:
        handle.write("$ " + shlex.join(spec["argv"] + ["--out", str(out)]) + "\n")
        handle.flush()
        try:
            proc = subprocess.run(spec["argv"] + ["--out", str(out)], env=tf1_env() if spec["tf1"] else base_env(),
                                  stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, cwd=_harness.REPO,
                                  check=False)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = time.perf_counter() - start
    base = {"job": spec["name"], "workload": spec["workload"], "variant": spec["variant"], "mode": spec["mode"],
            "process_seconds": seconds, "load_before": load_before}
    if code != 0 or not out.exists():
        tail = log.read_text().strip().splitlines()[-3:]
        return {**base, "error": f"exit {code}: {' | '.join(tail)}"}
    return {**json.loads(out.read_text()), **base}


def one_line(record: dict) -> str:
    if record.get("error"):
        return f"FAILED {record['error']}"
    if record["mode"] == "curve":
        return f"{len(record['runs'])} seed(s), {record['steps']} steps"
    if record["workload"] == "sine":
        return (f"{record['ms_per_iter_steady']:.2f} ms/iter steady, {record['ms_per_iter_total']:.2f} incl. compile, "
                f"final MSE {record['final_mse']:.3g}, last-steps mean {record['tail_mse']:.3g}")
    accuracies = " ".join(f"{e['test_accuracy']:.4f}" for e in record["epochs"])
    return f"{record['epochs'][-1]['elapsed']:.1f} s, test accuracy {accuracies}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = settings(args)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    check_tf1_python(args.tf1_python)

    plan: list[tuple[str, list[dict], str, list[str]]] = []
    if "sine" in config["workloads"]:
        plan.append(("sine", *sine_jobs(config, python, args.tf1_python)))
    if "mnist" in config["workloads"]:
        plan.append(("mnist", *mnist_jobs(config, python, args.tf1_python, find_mnist(args.mnist))))

    machine = _harness.machine_info()
    command = "python benchmarks/run.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                             if (argv if argv is not None else sys.argv[1:]) else "")
    total = sum(len(jobs) for _, jobs, _, _ in plan)
    print(f"{total} processes; results in {out}", flush=True)
    started = time.perf_counter()
    records: list[dict] = []
    count = 0
    for _, jobs, _, _ in plan:
        for spec in jobs:
            count += 1
            record = run_job(spec, raw, args.timeout)
            records.append(record)
            elapsed = (time.perf_counter() - started) / 60
            print(f"[{count}/{total} {elapsed:5.1f} min, load {record['load_before']:.1f}] {spec['name']}: "
                  f"{one_line(record)}", flush=True)

    summary = {}
    for workload, _, spec_variant, compiled in plan:
        summarize = report.summarize_sine if workload == "sine" else report.summarize_mnist
        summary[workload] = summarize(records, spec_variant, compiled)
    versions: dict[str, str] = {}
    for record in records:
        for key, value in record.get("versions", {}).items():
            versions.setdefault(f"TF1 programs: {key}" if record["variant"] == "tf1" else key, value)
    results = {
        "command": command,
        "config": config,
        "machine": machine,
        "versions": versions,
        "minutes": (time.perf_counter() - started) / 60,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "summary": summary,
        "records": records,
    }
    written = report.write_results(results, out, readme=not args.no_readme)

    print()
    for workload in summary.values():
        for verdict in workload["verdicts"]:
            print(f"{verdict['status']:4}  {verdict['target']}: {verdict['numbers']}")
    print(f"\nwrote {', '.join(map(str, written))} ({results['minutes']:.1f} min)")
    return 1 if any(r.get("error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
