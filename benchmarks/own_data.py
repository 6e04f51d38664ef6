"""The real-data specs over several seeds: test MASE / accuracy and wall time.

Runs `specs/co2_forecast.yaml`, `specs/airline_forecast.yaml` and `specs/gunpoint_classifier.yaml`
as written, each with `--set seed=N` for seeds 0 … N-1, every run in its own process
(`rnnflow.runner.run` into a throw-away MLflow store), one after another. Records each run's
metrics, its training time and the wall time of the whole run (data, model, training,
evaluation, plots and model logging; not the interpreter's imports), and the 1-minute load
average before it. Writes `results/own_data.json`, `results/own_data.md` and the "Own data"
section of the benchmarks README.

    python benchmarks/own_data.py                 # 5 seeds of each spec
    python benchmarks/own_data.py --seeds 3 --only gunpoint_classifier
    python benchmarks/own_data.py --seeds 5 --keep  # two more seeds after a run of 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import HERE, SPECS, machine_info, replace_section, write_record

RESULTS = HERE / "results"
README = HERE / "README.md"

# What each spec must reach on its test split (the issue's targets), and the time limit of a run.
TARGETS = {
    "co2_forecast": ("test_mase", "<", 1.0, "test MASE against the seasonal naive forecast below 1"),
    "airline_forecast": ("test_mase", "<", 1.0, "test MASE against the seasonal naive forecast below 1"),
    "gunpoint_classifier": ("test_accuracy", ">", 0.907, "test accuracy above 1-NN DTW's published 90.7 % "
                                                         "(goal 97 %)"),
}
SECONDS_LIMIT = 180.0
SHOWN = ("test_mase", "test_mae", "test_naive_mae", "val_mase", "test_accuracy", "val_accuracy", "test_loss")


def one(spec: str, seed: int, out: Path) -> None:
    """Run one spec with one seed in this process and write its record."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rnnflow-own-data-") as folder:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(folder) / 'mlflow.db'}"
        os.chdir(folder)  # the store's artifacts go beside it
        from rnnflow.runner import run

        started = time.perf_counter()
        result = run(SPECS / f"{spec}.yaml", [f"seed={seed}"])
        wall = time.perf_counter() - started
    write_record(out, {"spec": spec, "seed": seed, "wall_seconds": round(wall, 2),
                       "train_seconds": round(result.metrics.get("train_seconds", 0.0), 2),
                       "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                       "metrics": {k: v for k, v in result.metrics.items() if k.startswith(("train_", "val_", "test_"))}})


def measure(specs: list[str], seeds: int, folder: Path, keep: bool = False) -> dict:
    """Every spec with every seed, each in a fresh process; the records and their summary.

    With `keep`, a run whose record is already in the raw folder is not run again (more seeds
    after a first measurement of the same code: delete the folder when the code changes).
    """
    raw = folder / "own_data_raw"
    raw.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in range(seeds):
        for spec in specs:
            out = raw / f"{spec}-{seed}.json"
            if keep and out.is_file():
                records.append(json.loads(out.read_text()))
                print(f"{spec} seed {seed}: kept {out.name}", flush=True)
                continue
            print(f"{spec} seed {seed} ...", flush=True)
            done = subprocess.run([sys.executable, __file__, "--one", spec, "--seed", str(seed), "--record", str(out)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                (raw / f"{spec}-{seed}.log").write_text(done.stdout + done.stderr)
                records.append({"spec": spec, "seed": seed, "error": done.stderr.strip().splitlines()[-1:]})
                print(f"  FAILED (log in {raw})", flush=True)
                continue
            record = json.loads(out.read_text())
            records.append(record)
            name, _, _, _ = TARGETS[spec]
            print(f"  {name} {record['metrics'].get(name, float('nan')):.4f}, {record['wall_seconds']:.0f} s "
                  f"(load {record['load_before']})", flush=True)
    return {"machine": machine_info(), "seeds": seeds, "records": records, "summary": summarize(records)}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(records: list[dict]) -> dict:
    """Per spec: median, min and max of each metric and time, and the verdicts."""
    summary = {}
    for spec, (name, sense, bound, _) in TARGETS.items():
        runs = [r for r in records if r["spec"] == spec and "error" not in r]
        if not runs:
            continue
        entry = {"runs": len(runs), "failed": sum(r["spec"] == spec and "error" in r for r in records)}
        for key in SHOWN:
            values = [r["metrics"][key] for r in runs if key in r["metrics"]]
            if values:
                entry[key] = _spread(values)
        for key in ("wall_seconds", "train_seconds", "load_before"):
            entry[key] = _spread([r[key] for r in runs])
        values = [r["metrics"][name] for r in runs]
        meets = [v < bound if sense == "<" else v > bound for v in values]
        entry["target"] = {"metric": name, "bound": bound, "sense": sense, "runs_meeting": sum(meets),
                           "median_meets": (entry[name]["median"] < bound) if sense == "<" else (entry[name]["median"] > bound)}
        entry["under_time_limit"] = sum(r["wall_seconds"] < SECONDS_LIMIT for r in runs)
        summary[spec] = entry
    return summary


def markdown(results: dict) -> str:
    """The results table, the targets and the machine."""
    machine, seeds = results["machine"], results["seeds"]
    lines = [f"Each spec as written, with `--set seed=N` for N = 0 … {seeds - 1}; every run in its own process, one "
             "after another. Median [min – max] over the seeds. *Wall* is the whole `rnnflow.runner.run` call (data, "
             "model, training, evaluation, plots, model logging; not the interpreter's imports), *train* the "
             "training loop alone; *load* the 1-minute load average before each run.", "",
             "| spec | target | test | validation | naive MAE (test) | wall s | train s | load | met |",
             "|---|---|---|---|---|---|---|---|---|"]
    for spec, entry in results["summary"].items():
        name, sense, bound, words = TARGETS[spec]
        val = "val_mase" if name == "test_mase" else "val_accuracy"
        naive = _cell(entry.get("test_naive_mae"), ".3g")
        meets = f"{entry['target']['runs_meeting']}/{entry['runs']}"
        time_ok = f"{entry['under_time_limit']}/{entry['runs']} under {SECONDS_LIMIT:.0f} s"
        lines.append(f"| `{spec}` | {name.replace('test_', '')} {sense} {bound:g} | {_cell(entry[name])} | "
                     f"{_cell(entry.get(val))} | {naive} | {_cell(entry['wall_seconds'], '.0f')} | "
                     f"{_cell(entry['train_seconds'], '.0f')} | {_cell(entry['load_before'], '.1f')} | "
                     f"{meets} runs; {time_ok} |")
    lines += ["", "Targets: " + "; ".join(f"`{s}`: {TARGETS[s][3]}" for s in results["summary"]) + ".", "",
              f"Machine: {machine['cpu']}, {machine['cores_usable']} usable cores, {machine.get('ram_gib')} GiB; "
              f"{machine['os']}; Python {machine['python']}; rnnflow {machine.get('rnnflow_commit')}"
              f"{' (with uncommitted changes)' if machine.get('rnnflow_dirty') else ''}; {machine['date_utc']}. "
              "The machine is shared: the load column says how busy it was; an idle 2-core machine runs faster."]
    return "\n".join(lines)


def _cell(spread: dict | None, spec: str = ".4f") -> str:
    if not spread:
        return "–"
    return f"{spread['median']:{spec}} [{spread['min']:{spec}} – {spread['max']:{spec}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 … N-1 (default 5)")
    parser.add_argument("--only", choices=sorted(TARGETS), action="append", help="one spec (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go (the README only for the default)")
    parser.add_argument("--keep", action="store_true", help="reuse the raw records already measured (same code)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.seed, args.record)
        return
    results = measure(args.only or list(TARGETS), args.seeds, args.out, args.keep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "own_data.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (args.out / "own_data.md").write_text("# Own data: the real-data specs\n\n" + text + "\n")
    if args.out.resolve() == RESULTS.resolve():
        replace_section(README, "own-data", text)
    print(text)


if __name__ == "__main__":
    main()
