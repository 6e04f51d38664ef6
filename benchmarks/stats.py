"""The statistics of a benchmark run (standard library only): what the records of each workload
add up to, before any target is applied (`verdicts.py`) or anything is drawn (`render.py`).

A record is what one benchmark process wrote (`_harness.write_record`): its workload, variant,
mode (`timed`, `curve` or `mse`), seed and measurements.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from _harness import ACCURACY_TARGET, first_at_least


def median(values: list[float]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """A distribution-free confidence interval for the median: the order statistics x(k) and
    x(n+1-k) with the largest k whose coverage, 1 - 2 P(Binomial(n, 1/2) < k), is at least `level`.

    Returns:
        (low, high, coverage), or None when n is too small for that level.
    """
    xs, n = sorted(values), len(values)
    below = 0.0  # P(Binomial(n, 1/2) < k)
    best = None
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        coverage = 1 - 2 * below
        if coverage < level:
            break
        best = (xs[k - 1], xs[n - k], coverage)
    return best


def by_variant(records: list[dict], workload: str, mode: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for record in records:
        if record.get("workload") == workload and record.get("mode", "timed") == mode and not record.get("error"):
            out.setdefault(record["variant"], []).append(record)
    return out


def compare_curves(a: dict, b: dict) -> dict[str, Any]:
    """Per seed: the largest relative difference between two per-step loss curves."""
    seeds = []
    runs_b = {r["seed"]: r for r in b["runs"]}
    for run_a in a["runs"]:
        run_b = runs_b.get(run_a["seed"])
        if run_b is None:
            continue
        pairs = list(zip(run_a["losses"], run_b["losses"]))
        rel = max(abs(x - y) / max(abs(y), 1e-30) for x, y in pairs)
        seeds.append({"seed": run_a["seed"], "max_rel_diff": rel, "steps": len(pairs),
                      "same_initial_weights": run_a["initial_weights"] == run_b["initial_weights"]})
    worst = max((s["max_rel_diff"] for s in seeds), default=None)
    return {"a": a["variant"], "b": b["variant"], "seeds": seeds, "max_rel_diff": worst,
            "same_initial_weights": all(s["same_initial_weights"] for s in seeds) if seeds else None}


def curve_comparisons(records: list[dict], workload: str, pairs: list[tuple[str, str]]) -> list[dict]:
    curves = {v: rs[0] for v, rs in by_variant(records, workload, "curve").items()}
    return [compare_curves(curves[a], curves[b]) for a, b in pairs if a in curves and b in curves]


def early_timed(records: list[dict], workload: str, a: str, b: str, upto: int = 50) -> dict[str, Any] | None:
    """The same comparison on the timed runs themselves (several steps per compiled call, as
    measured): their logged mean losses up to iteration `upto`, seed by seed."""
    timed = by_variant(records, workload, "timed")
    runs_b = {r["seed"]: r for r in timed.get(b, [])}
    seeds = []
    for run_a in timed.get(a, []):
        run_b = runs_b.get(run_a["seed"])
        if run_b is None or "curve" not in run_a or "curve" not in run_b:
            continue
        points_b = {int(at): loss for at, loss in run_b["curve"]}
        pairs = [(loss, points_b[int(at)]) for at, loss in run_a["curve"] if int(at) <= upto and int(at) in points_b]
        if pairs:
            rel = max(abs(x - y) / max(abs(y), 1e-30) for x, y in pairs)
            seeds.append({"seed": run_a["seed"], "max_rel_diff": rel, "steps": len(pairs),
                          "same_initial_weights": True})
    if not seeds:
        return None
    return {"a": a, "b": b, "timed": True, "upto": upto, "seeds": seeds,
            "max_rel_diff": max(s["max_rel_diff"] for s in seeds), "same_initial_weights": True}


def end_of_training(records: list[dict], variant: str, base: str = "fit") -> dict[str, Any] | None:
    """`variant` against `base` at the end of training, seed by seed (a seed gives both the same
    initial weights): the mean loss of the last steps (`tail_mse`) and its ratio, over the timed
    runs and the extra seeds; the snapshot after the last step alongside."""
    def runs(name: str) -> dict[int, dict]:
        return {r["seed"]: r for mode in ("timed", "mse") for r in by_variant(records, "sine", mode).get(name, [])
                if r.get("tail_mse") is not None}

    mine, theirs = runs(variant), runs(base)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    ratios = {s: mine[s]["tail_mse"] / theirs[s]["tail_mse"] for s in seeds}
    snapshot_ratios = [mine[s]["final_mse"] / theirs[s]["final_mse"] for s in seeds]
    return {
        "base": base,
        "seeds": seeds,
        "ratio": {str(s): r for s, r in ratios.items()},
        "ratio_median": median(list(ratios.values())),
        "ratio_interval": median_interval(list(ratios.values())),
        "lower": sum(r < 1 for r in ratios.values()),
        "tail_median": median([mine[s]["tail_mse"] for s in seeds]),
        "base_tail_median": median([theirs[s]["tail_mse"] for s in seeds]),
        "final_median": median([mine[s]["final_mse"] for s in seeds]),
        "base_final_median": median([theirs[s]["final_mse"] for s in seeds]),
        "final_ratio_median": median(snapshot_ratios),
    }


def sine_summary(records: list[dict], compiled: list[str]) -> dict[str, Any]:
    """The sine workload: each variant's timings and losses, the end-of-training comparison with
    plain fit, and the learning curves of the compiled variants against the graph path and fit.

    Returns:
        {"variants": ..., "end": ..., "curves": ...}.
    """
    timed = by_variant(records, "sine", "timed")
    variants = {}
    for variant, rs in timed.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        variants[variant] = {
            "runs": len(rs),
            "seeds": [r["seed"] for r in rs],
            "ms_steady_median": median([r["ms_per_iter_steady"] for r in rs]),
            "ms_steady_min": min(r["ms_per_iter_steady"] for r in rs),
            "ms_total_median": median([r["ms_per_iter_total"] for r in rs]),
            "cpu_ms_median": median([r.get("cpu_ms_per_iter") for r in rs]),
            "final_mse": {str(r["seed"]): r["final_mse"] for r in rs},
            "final_mse_median": median([r["final_mse"] for r in rs]),
            "max_rss_mb": max(r["max_rss_mb"] for r in rs),
            "process_seconds_median": median([r.get("process_seconds") for r in rs]),
            "load_before_median": median([r.get("load_before") for r in rs]),
        }
    end = {variant: summary for variant in variants if variant != "fit"
           if (summary := end_of_training(records, variant)) is not None}
    pairs = [(c, "rnnflow_graph") for c in compiled] + [("rnnflow_graph", "fit")] + [(c, "fit") for c in compiled]
    curves = curve_comparisons(records, "sine", pairs)
    curves += [c for c in (early_timed(records, "sine", v, "rnnflow_graph") for v in compiled) if c]
    return {"variants": variants, "end": end, "curves": curves}


def mnist_summary(records: list[dict], compiled: list[str]) -> dict[str, Any]:
    """The MNIST workload: each variant's epoch times and accuracies, when it reached the target
    accuracy, and the learning curves of the compiled variants against the graph path and fit.

    Returns:
        {"variants": ..., "curves": ...}.
    """
    timed = by_variant(records, "mnist", "timed")
    variants = {}
    for variant, rs in timed.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        reps = []
        for r in rs:
            accuracies = [e["test_accuracy"] for e in r["epochs"]]
            hit = first_at_least(accuracies, ACCURACY_TARGET)
            reps.append({
                "seed": r["seed"],
                "epoch_seconds": [e["seconds"] for e in r["epochs"]],
                "accuracies": accuracies,
                "epoch_reached": hit + 1 if hit is not None else None,
                "seconds_to_target": r["epochs"][hit]["elapsed"] if hit is not None else None,
                "total_seconds": r["epochs"][-1]["elapsed"] if r["epochs"] else None,
            })
        later = [s for rep in reps for s in rep["epoch_seconds"][1:]]
        reached = [rep["seconds_to_target"] for rep in reps]
        variants[variant] = {
            "runs": len(rs),
            "seeds": [r["seed"] for r in rs],
            "epochs": len(rs[0]["epochs"]),
            "first_epoch_seconds_median": median([rep["epoch_seconds"][0] for rep in reps]),
            "later_epoch_seconds_median": median(later),
            "reached_in_all": all(t is not None for t in reached),
            "seconds_to_target_median": median(reached) if all(t is not None for t in reached) else None,
            "epoch_reached": [rep["epoch_reached"] for rep in reps],
            "total_seconds_median": median([rep["total_seconds"] for rep in reps]),
            "final_accuracy_median": median([rep["accuracies"][-1] for rep in reps]),
            "reps": reps,
            "max_rss_mb": max(r["max_rss_mb"] for r in rs),
            "process_seconds_median": median([r.get("process_seconds") for r in rs]),
            "load_before_median": median([r.get("load_before") for r in rs]),
        }
    reference = "rnnflow_graph"
    pairs = [(c, reference) for c in compiled] + [(reference, "fit")] + [(c, "fit") for c in compiled]
    curves = curve_comparisons(records, "mnist", pairs)
    curves += [c for c in (early_timed(records, "mnist", v, reference) for v in compiled) if c]
    return {"variants": variants, "curves": curves}
