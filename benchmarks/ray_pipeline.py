"""A 4-run pipeline of a batch-1 spec, serial against `--executor ray`, measured side by side.

Each repetition runs the same pipeline (specs/sine_forecast.yaml, a grid of four learning rates,
`resources: {cpus: 1}`) three ways, each as the user would, `rnnflow pipeline run` in a process of
its own with a fresh MLflow store, timed from process start to exit:

- `serial`: one run after another, TensorFlow pinned to one thread (the pipeline gives resources),
- `serial_default`: the same without `resources`, so TensorFlow takes its default threads,
- `ray`: `--executor ray`, a local Ray cluster started and stopped by rnnflow, two runs at a time.

The order of the three is rotated from one repetition to the next, so a change of load on the
machine falls on all of them alike; the 1-minute load average is recorded before each process.
Per-run metrics of `ray` must equal `serial`'s (same spec, same thread setting).

    python benchmarks/ray_pipeline.py [--reps 3] [--iterations 50000]

Writes benchmarks/results/ray_pipeline.{json,md} and the section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPEC = REPO / "specs" / "sine_forecast.yaml"
RATES = [1e-3, 5e-4, 2e-3, 2.5e-4]
VARIANTS = ["serial", "serial_default", "ray"]
COMPARED = ("train_", "test_")
TARGET = 0.7


def pipeline(folder: Path, iterations: int, pinned: bool) -> Path:
    import yaml

    body = {"name": "sine-lr", "experiment": "bench", "set": {"train.iterations": iterations},
            "runs": [{"spec": str(SPEC), "grid": {"train.learning_rate": RATES}}]}
    if pinned:
        body["resources"] = {"cpus": 1}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def cores_available(seconds: float = 3.0) -> float:
    """How many cores two busy processes get right now: their CPU seconds over the wall time.

    The machine is shared; 2.0 means both cores are free for a pipeline's two parallel runs, 1.0
    that other work takes one of them (and two runs in parallel then go no faster than one after
    the other).
    """
    import multiprocessing

    def spin(queue):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        queue.put(time.process_time())

    queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=spin, args=(queue,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    used = sum(queue.get() for _ in workers)
    for worker in workers:
        worker.join()
    return used / seconds


def measure(variant: str, iterations: int) -> dict:
    """One pipeline run in its own process: wall time, per-run metrics, load average before."""
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        folder = Path(tmp)
        path = pipeline(folder, iterations, pinned=variant != "serial_default")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "RAY_TMPDIR": tmp}
        command = [sys.executable, "-m", "rnnflow", "pipeline", "run", str(path), "-q"]
        if variant == "ray":
            command += ["--executor", "ray"]
        cores = cores_available()
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{done.stdout}\n{done.stderr}")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("bench")
        children = [r for r in client.search_runs([experiment.experiment_id])
                    if "mlflow.parentRunId" in r.data.tags]
        if len(children) != len(RATES) or any(r.info.status != "FINISHED" for r in children):
            raise SystemExit(f"{variant}: expected {len(RATES)} FINISHED children, got "
                             f"{[(r.info.run_name, r.info.status) for r in children]}")
        metrics = {r.info.run_name: {k: v for k, v in r.data.metrics.items() if k.startswith(COMPARED)
                                     and k != "train_seconds"} for r in children}
        training = {r.info.run_name: {k: r.data.metrics.get(k) for k in ("train_seconds", "ms_per_iteration",
                                                                           "first_call_seconds")}
                    for r in children}
    return {"variant": variant, "seconds": seconds, "load_before": load, "cores_before": cores, "metrics": metrics,
            "train_seconds": training}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    records = []
    for rep in range(args.reps):
        order = VARIANTS[rep % 3:] + VARIANTS[:rep % 3]
        for variant in order:
            record = measure(variant, args.iterations)
            record["rep"] = rep
            records.append(record)
            print(f"rep {rep} {variant}: {record['seconds']:.1f} s (load {record['load_before']:.1f}, "
                  f"{record['cores_before']:.2f} cores free)", flush=True)
    summary = summarize(records, args)
    summary["started"] = started.strftime("%Y-%m-%d %H:%M UTC")
    summary["minutes"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_pipeline.json").write_text(json.dumps({"summary": summary, "records": records}, indent=2))
    table = report(summary)
    (args.out / "ray_pipeline.md").write_text(table + "\n")
    readme = HERE / "README.md"
    text = readme.read_text()
    begin, end = "<!-- ray:begin -->", "<!-- ray:end -->"
    if begin in text and end in text and args.out == HERE / "results":
        head, rest = text.split(begin, 1)
        readme.write_text(head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1])
    print(table)


def summarize(records: list[dict], args) -> dict:
    by = {v: [r for r in records if r["variant"] == v] for v in VARIANTS}
    seconds = {v: [r["seconds"] for r in rs] for v, rs in by.items()}
    ratios = [ray["seconds"] / serial["seconds"] for ray, serial in zip(by["ray"], by["serial"])]
    ratios_default = [ray["seconds"] / serial["seconds"] for ray, serial in zip(by["ray"], by["serial_default"])]
    identical = all(ray["metrics"] == serial["metrics"] for ray, serial in zip(by["ray"], by["serial"]))
    same_default = all(ray["metrics"] == serial["metrics"] for ray, serial in zip(by["ray"], by["serial_default"]))
    return {
        "iterations": args.iterations, "reps": args.reps, "rates": RATES,
        "seconds": {v: {"median": statistics.median(s), "min": min(s), "max": max(s)} for v, s in seconds.items()},
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "ratio_vs_default_threads": {"median": statistics.median(ratios_default), "min": min(ratios_default),
                                     "max": max(ratios_default)},
        "identical_metrics": identical, "identical_to_default_threads": same_default,
        "cores": {"median": statistics.median(r["cores_before"] for r in records),
                  "min": min(r["cores_before"] for r in records), "max": max(r["cores_before"] for r in records)},
        "ms_per_iteration": {v: statistics.median(t["ms_per_iteration"] for r in rs for t in r["train_seconds"].values())
                             for v, rs in by.items()},
        "load": {"median": statistics.median(r["load_before"] for r in records),
                 "min": min(r["load_before"] for r in records), "max": max(r["load_before"] for r in records)},
        "passed": statistics.median(ratios) <= TARGET and identical,
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip(),
    }


def report(summary: dict) -> str:
    s, r, ms = summary["seconds"], summary["ratio"], summary["ms_per_iteration"]
    verdict = "PASS" if summary["passed"] else "FAIL"
    lines = [
        f"Measured {summary.get('started', '')} on {os.cpu_count()} cores; rnnflow {summary['commit']}; "
        f"`python benchmarks/ray_pipeline.py --reps {summary['reps']} --iterations {summary['iterations']}`; "
        f"{summary.get('minutes', '?')} min. 1-minute load average before each process: median "
        f"{summary['load']['median']:.1f} (min {summary['load']['min']:.1f}, max {summary['load']['max']:.1f}); "
        f"cores two busy processes got just before each (of 2): median {summary['cores']['median']:.2f} "
        f"(min {summary['cores']['min']:.2f}, max {summary['cores']['max']:.2f}).",
        "",
        "| pipeline (4 runs of sine_forecast, batch 1) | wall time, median (min–max) | ms per iteration of a run, median |",
        "|---|---|---|",
        f"| serial, TensorFlow on 1 thread (`resources: {{cpus: 1}}`) | {s['serial']['median']:.1f} s "
        f"({s['serial']['min']:.1f}–{s['serial']['max']:.1f}) | {ms['serial']:.3f} |",
        f"| serial, TensorFlow's default threads | {s['serial_default']['median']:.1f} s "
        f"({s['serial_default']['min']:.1f}–{s['serial_default']['max']:.1f}) | {ms['serial_default']:.3f} |",
        f"| `--executor ray` (local cluster started and stopped by rnnflow, 2 runs at a time) | "
        f"{s['ray']['median']:.1f} s ({s['ray']['min']:.1f}–{s['ray']['max']:.1f}) | {ms['ray']:.3f} |",
        "",
        f"Target: ray <= {TARGET}x the serial wall time with identical per-run metrics: **{verdict}** — "
        f"ratio {r['median']:.2f} (median of the repetitions' ratios; {r['min']:.2f}–{r['max']:.2f}), "
        f"per-run train_*/test_* metrics identical to serial's: {summary['identical_metrics']}. Against serial "
        f"with TensorFlow's default threads: ratio {summary['ratio_vs_default_threads']['median']:.2f} "
        f"(metrics identical there too: {summary['identical_to_default_threads']}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
