"""Training controls, measured: validation, learning-rate schedules, early stopping, restore-best.

Every run is its own process: the spec through `rnnflow.runner.run` (tracked into a throw-away
MLflow store), timed from the process start (imports included: what `rnnflow run` costs) and
around the run alone. Workloads:

  gru     specs/gru_forecast.yaml as it was before the training controls (TODAY: 2500 iterations
          at a constant rate, no validation split, the overrides below) against the spec as
          written, seed by seed, the two in an order that alternates from seed to seed so a change
          of load falls on both. Target: the same or better test MSE (median over the seeds) in at
          most 60 % of the training's wall time (median of the per-seed ratios; the whole process's
          ratio is reported beside it).
  mnist   specs/mnist_classifier.yaml as written: test accuracy >= 98.0 % (median over the seeds),
          the weights chosen on the validation split only.
  bilstm  specs/mnist_bilstm.yaml as written: >= 98.8 % test accuracy in under 10 minutes.

Results go to OUT/controls_<workload>.json and .md; with the default OUT the benchmarks README's
section of the workload is rewritten too.

usage: python benchmarks/controls.py {gru,mnist,bilstm} [--seeds N ...] [--set KEY=VALUE]... [--out DIR]
       python benchmarks/controls.py child SPEC SEED RECORD.json [--set KEY=VALUE]...
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import _harness  # noqa: E402

DEFAULT_OUT = _harness.HERE / "results"

# specs/gru_forecast.yaml before the training controls: what `rnnflow run specs/gru_forecast.yaml`
# trained until then (2500 iterations at 0.003, every window trained on, no evaluation during training).
GRU_TODAY = ["train.iterations=2500", "train.learning_rate=0.003", "train.validation=null", "train.early_stopping=null",
             "train.schedule={type: constant}", "evaluate.every=null"]

WORKLOADS = {
    "gru": {"spec": "gru_forecast.yaml", "variants": {"today": GRU_TODAY, "controls": []}, "seeds": [0, 1, 2, 3, 4],
            "metric": "test_mse"},
    "mnist": {"spec": "mnist_classifier.yaml", "variants": {"controls": []}, "seeds": [0, 1, 2],
              "metric": "test_accuracy", "target": 0.98},
    "bilstm": {"spec": "mnist_bilstm.yaml", "variants": {"controls": []}, "seeds": [0, 1, 2],
               "metric": "test_accuracy", "target": 0.988, "minutes": 10.0},
}


# ------------------------------------------------------------------------------ one measured run


def child(spec: str, seed: int, record_path: Path, overrides: list[str]) -> None:
    """Run one spec with one seed; write its record."""
    import _common  # noqa: F401  (TensorFlow, quietly)
    from _common import Recorder, temporary_mlflow_store

    from rnnflow.runner import run

    load_start = list(os.getloadavg())
    cpu_start = time.process_time()
    recorder = Recorder()
    started = time.perf_counter()
    with temporary_mlflow_store():
        result = run(_harness.SPECS / spec, [f"seed={seed}", *overrides], callbacks=[recorder])
    run_seconds = time.perf_counter() - started
    evaluations = [{"iteration": at, "seconds": seconds, **{k: v for k, v in logs.items() if k.startswith("val_")}}
                   for at, seconds, logs in recorder.points if any(k.startswith("val_") for k in logs)]
    _harness.write_record(record_path, {
        "spec": spec, "seed": seed, "overrides": overrides,
        "process_seconds": time.perf_counter() - PROCESS_START, "run_seconds": run_seconds,
        "cpu_seconds": time.process_time() - cpu_start, "load_start": load_start,
        "load_end": list(os.getloadavg()), "stop_reason": result.stop_reason, "weights": result.weights,
        "iterations": result.iterations,
        "metrics": {k: v for k, v in result.metrics.items()
                    if k.startswith(("train_", "val_", "test_", "best_", "stopped_"))
                    or k in ("ms_per_iteration", "first_call_seconds")},
        "evaluations": evaluations,
    })


# ------------------------------------------------------------------------------ a workload


def measure(name: str, seeds: list[int], extra: list[str], raw: Path, timeout: float) -> list[dict]:
    """Every (seed, variant) run in its own process, the variants' order alternating by seed."""
    workload = WORKLOADS[name]
    variants = list(workload["variants"].items())
    records = []
    for i, seed in enumerate(seeds):
        order = variants[i % len(variants):] + variants[: i % len(variants)]
        for variant, overrides in order:
            path = raw / f"{name}-{variant}-seed{seed}.json"
            # --set changes the spec as written, never today's settings.
            changes = overrides if variant == "today" else [*overrides, *extra]
            command = [sys.executable, str(Path(__file__).resolve()), "child", workload["spec"], str(seed), str(path),
                       *[f"--set={o}" for o in changes]]
            print(f"[{name}] seed {seed}, {variant} (load {os.getloadavg()[0]:.1f})", flush=True)
            with open(raw / f"{name}-{variant}-seed{seed}.log", "w") as log:
                subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            record = json.loads(path.read_text())
            record["variant"] = variant
            records.append(record)
            m = record["metrics"]
            print(f"  {workload['metric']} {m[workload['metric']]:.5g}, {record['process_seconds']:.0f} s, "
                  f"stopped {record['stop_reason']} at {record['iterations']} ({record['weights']})", flush=True)
    return records


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def steady_seconds(record: dict) -> float:
    """Training seconds after the first compiled call (which traces and compiles)."""
    return record["metrics"]["train_seconds"] - record["metrics"].get("first_call_seconds", 0.0)


def summarize(name: str, records: list[dict]) -> dict:
    workload = WORKLOADS[name]
    metric = workload["metric"]
    summary: dict = {}
    for variant in workload["variants"]:
        rows = [r for r in records if r["variant"] == variant]
        summary[variant] = {
            metric: spread([r["metrics"][metric] for r in rows]),
            "process_seconds": spread([r["process_seconds"] for r in rows]),
            "train_seconds": spread([r["metrics"]["train_seconds"] for r in rows if "train_seconds" in r["metrics"]]
                                    or [r["run_seconds"] for r in rows]),
            "iterations": spread([r["iterations"] for r in rows]),
            "load": spread([r["load_start"][0] for r in rows]),
        }
    verdicts = []
    if name == "gru":
        by_seed = {}
        for r in records:
            by_seed.setdefault(r["seed"], {})[r["variant"]] = r
        def ratio(seconds) -> dict:
            return spread([seconds(s["controls"]) / seconds(s["today"]) for s in by_seed.values()])

        summary["time_ratio"] = ratio(lambda r: r["process_seconds"])
        summary["train_time_ratio"] = ratio(lambda r: r["metrics"]["train_seconds"])
        summary["steady_time_ratio"] = ratio(steady_seconds)
        summary["cpu_time_ratio"] = ratio(lambda r: r["cpu_seconds"])
        better = summary["controls"][metric]["median"] <= summary["today"][metric]["median"]
        verdicts.append(("median test MSE no worse than today's", better,
                         f"{summary['controls'][metric]['median']:.5g} vs {summary['today'][metric]['median']:.5g}"))
        # The target is the training's wall time, what the controls change; the whole process is
        # reported beside it (its imports, store, final evaluation and model logging are the same in both).
        verdicts.append(("median wall-time ratio (training) <= 0.60", summary["train_time_ratio"]["median"] <= 0.60,
                         f"{summary['train_time_ratio']['median']:.2f}"))
    else:
        value = summary["controls"][metric]["median"]
        verdicts.append((f"median {metric} >= {workload['target']:.1%}", value >= workload["target"], f"{value:.2%}"))
        if "minutes" in workload:
            slowest = summary["controls"]["process_seconds"]["max"] / 60
            verdicts.append((f"every run under {workload['minutes']:g} minutes (whole process)",
                             slowest < workload["minutes"], f"slowest {slowest:.1f} min"))
    summary["verdicts"] = [{"target": t, "pass": bool(ok), "measured": m} for t, ok, m in verdicts]
    return summary


def markdown(name: str, results: dict) -> str:
    workload = WORKLOADS[name]
    metric = workload["metric"]
    machine, summary = results["machine"], results["summary"]
    fmt = (lambda v: f"{v:.2%}") if "accuracy" in metric else (lambda v: f"{v:.5f}")
    lines = [
        f"Measured {machine['date_utc']} on {machine['cpu']} ({machine['cores']} cores, shared), rnnflow "
        f"{machine.get('rnnflow_commit')}{' (uncommitted changes)' if machine.get('rnnflow_dirty') else ''}; "
        f"command `{results['command']}`. Each run is one process (imports, data, training, evaluation, "
        "logging into a throw-away MLflow store); the load average is the 1-minute one at each run's start.",
        "",
        "| variant | seed | " + metric + " | stopped | weights | iterations | train s (first call) | process s | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["records"]:
        m = r["metrics"]
        lines.append(f"| {r['variant']} | {r['seed']} | {fmt(m[metric])} | {r['stop_reason']} | "
                     f"{r['weights']} | {r['iterations']} | {m.get('train_seconds', 0):.1f} "
                     f"({m.get('first_call_seconds', 0):.1f}) | {r['process_seconds']:.0f} | {r['load_start'][0]:.1f} |")
    lines += ["", "| variant | " + metric + " median [min, max] | process s median [min, max] | iterations median |",
              "|---|---|---|---|"]
    for variant in workload["variants"]:
        s = summary[variant]
        lines.append(f"| {variant} | {fmt(s[metric]['median'])} [{fmt(s[metric]['min'])}, {fmt(s[metric]['max'])}] "
                     f"| {s['process_seconds']['median']:.0f} [{s['process_seconds']['min']:.0f}, "
                     f"{s['process_seconds']['max']:.0f}] | {s['iterations']['median']:g} |")
    if "time_ratio" in summary:
        def show(key: str) -> str:
            t = summary[key]
            return f"median {t['median']:.2f} [{t['min']:.2f}, {t['max']:.2f}]"

        lines += ["", "Wall time of the spec as written over today's, seed by seed: whole process "
                      f"{show('time_ratio')}; the training loop (evaluations during training included) "
                      f"{show('train_time_ratio')}; the training loop after its first call (which traces and "
                      f"compiles) {show('steady_time_ratio')}; CPU time of the process {show('cpu_time_ratio')}."]
    if name == "mnist":
        lines += ["", book_comparison(summary["controls"])]
    lines += [""] + [f"- {'PASS' if v['pass'] else 'FAIL'}: {v['target']} ({v['measured']})" for v in summary["verdicts"]]
    return "\n".join(lines) + "\n"


def book_comparison(controls: dict) -> str:
    """The spec as written next to the 100 fixed epochs of `mnist_full.py` (results/mnist_full.json)."""
    path = DEFAULT_OUT / "mnist_full.json"
    if not path.exists():
        return "(results/mnist_full.json, the 100 fixed epochs, is missing: run benchmarks/mnist_full.py)"
    full = json.loads(path.read_text())
    s = full["summary"]
    return (f"Next to the 100 fixed epochs at a constant rate, no validation split (`mnist_full.py`, measured "
            f"{full['machine']['date_utc']} at load {full['machine']['load_average'][0]}): "
            f"{s['train_minutes']:.1f} min of training, {full['process_minutes']:.1f} min for the process, final "
            f"test accuracy {s['final_test_accuracy']:.2%} (its best, {s['best_test_accuracy']:.2%}, was seen only "
            f"on the test split). The spec as written: {controls['train_seconds']['median'] / 60:.1f} min of "
            f"training and {controls['process_seconds']['median'] / 60:.1f} min for the process (medians).")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        parser = argparse.ArgumentParser(prog="controls.py child")
        parser.add_argument("spec")
        parser.add_argument("seed", type=int)
        parser.add_argument("record", type=Path)
        parser.add_argument("--set", dest="overrides", action="append", default=[])
        args = parser.parse_args(argv[1:])
        child(args.spec, args.seed, args.record, args.overrides)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the workload's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of the spec as written (not of gru's `today`); the README is then "
                             "left alone")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--mnist", default=None, help="mnist.npz (default: as rnnflow finds it)")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--rewrite", action="store_true",
                        help="run nothing: recompute the summary and markdown from OUT/controls_<workload>.json")
    args = parser.parse_args(argv)
    stem = args.out / f"controls_{args.workload}"
    if args.rewrite:
        results = json.loads(stem.with_suffix(".json").read_text())
        results["summary"] = summarize(args.workload, results["records"])
        write(args.workload, results, stem, readme=args.out.resolve() == DEFAULT_OUT.resolve())
        return
    if args.mnist:
        os.environ["RNNFLOW_MNIST"] = str(Path(args.mnist).resolve())
    seeds = args.seeds or WORKLOADS[args.workload]["seeds"]
    machine = _harness.machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rnnflow-controls-") as raw:
        records = measure(args.workload, seeds, args.overrides, Path(raw), args.timeout)
    results = {"command": shlex.join(["python", "benchmarks/controls.py", *argv]), "machine": machine,
               "records": records, "summary": summarize(args.workload, records)}
    write(args.workload, results, stem, readme=not args.overrides and args.out.resolve() == DEFAULT_OUT.resolve())


def write(name: str, results: dict, stem: Path, readme: bool) -> None:
    """The JSON and markdown results, and the README section when `readme`."""
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(name, results)
    stem.with_suffix(".md").write_text(f"# Training controls: {name}\n\n{text}")
    print(text)
    if readme and _harness.replace_section(_harness.HERE / "README.md", f"controls-{name}", text):
        print("updated benchmarks/README.md")


if __name__ == "__main__":
    main()
