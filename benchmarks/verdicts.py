"""The targets of the benchmark issue and how a workload's statistics (`stats.py`) are judged
against them: the policy, in one place. Standard library only.

A verdict is {"target", "status" (PASS, FAIL, N/A, INCONCLUSIVE, INFO: ...), "numbers", "note"}.
"""

from __future__ import annotations

from typing import Any

from _harness import ACCURACY_TARGET
from stats import median

# The targets (same machine, same run of the benchmark).
SINE_VS_TF1 = 3.0  # the spec's run at least 3x faster per iteration than the TF1 program
SINE_VS_FIT = 5.0  # ... and at least 5x faster than plain fit
MSE_TOLERANCE = 0.10  # final training MSE no worse than plain fit's, within 10 %: median over the
# seeds of the per-seed ratio of the mean loss of the last steps (same seed = same initial weights)
CURVE_TOLERANCE = 1e-4  # a compiled path learns like the uncompiled one: first-50 step losses


def _verdict(name: str, ok: bool | None, numbers: str, note: str = "", status: str | None = None) -> dict[str, Any]:
    status = status or ("PASS" if ok else ("FAIL" if ok is not None else "N/A"))
    return {"target": name, "status": status, "numbers": numbers, "note": note}


def sine(summary: dict[str, Any], spec_variant: str, compiled: list[str]) -> list[dict]:
    """The sine targets, for the spec as written and for each compiled variant."""
    variants = summary["variants"]
    out = []
    for variant in [spec_variant] + [c for c in compiled if c != spec_variant]:
        if variant in variants:
            out.extend(_sine_verdicts(variants, summary["end"], summary["curves"], variant, spec_variant))
    return out


def sine_notes(spec_variant: str) -> list[str]:
    """What a reader of the sine verdicts must know about which variant is the spec as written."""
    if spec_variant != "rnnflow_graph":
        return []
    return ["specs/sine_forecast.yaml does not set `train.jit_compile: true`, so the spec as written "
            "trains on the graph (uncompiled) path; the targets are also given for the XLA path "
            "(`--set train.jit_compile=true`, marked override)."]


def _ratio(slow: float | None, fast: float | None) -> float | None:
    return slow / fast if slow and fast else None


def _sine_verdicts(variants: dict, end: dict, curves: list[dict], variant: str, spec_variant: str) -> list[dict]:
    mine = variants[variant]
    who = "spec as written" if variant == spec_variant else f"{variant} (override)"
    out = []
    for base, factor in (("tf1", SINE_VS_TF1), ("fit", SINE_VS_FIT)):
        if base not in variants:
            out.append(_verdict(f"sine, {who}: >= {factor:g}x faster per iteration than {base}", None,
                                f"no successful run of {base}"))
            continue
        for key, what in (("ms_steady_median", "steady state"), ("ms_total_median", "incl. compile")):
            ratio = _ratio(variants[base][key], mine[key])
            out.append(_verdict(
                f"sine, {who}: >= {factor:g}x faster per iteration than {base} ({what})",
                ratio is not None and ratio >= factor,
                f"{ratio:.2f}x ({mine[key]:.2f} vs {variants[base][key]:.2f} ms/iter, medians)" if ratio else "-",
            ))
    if "fit" in variants:
        out.extend(_end_verdicts(end.get(variant), who))
    if variant != "rnnflow_graph":
        out.extend(_learning_verdicts("sine", variant, curves))
    return out


def _end_verdicts(e: dict | None, who: str) -> list[dict]:
    """The end-of-training target, read as the mean loss of the last steps seed by seed, and the
    previous reading (medians of the MSE after the last step) for information."""
    name = (f"sine, {who}: final training MSE no worse than plain fit's (within 10 %), read as the mean loss "
            "of the last steps, seed by seed")
    interval = e and e.get("ratio_interval")
    if not interval:
        # Fewer than six pairs: no 95 % interval for the median, and too few seeds to judge.
        seeds = len(e["seeds"]) if e else 0
        return [_verdict(name, None, f"{seeds} seed(s) with the mean loss of the last steps; at least 6 needed")]
    low, high, coverage = interval
    resolved = not (low < 1 / (1 + MSE_TOLERANCE) and high > 1 + MSE_TOLERANCE)
    previous = e["final_median"] / e["base_final_median"]
    previous_ok = previous <= 1 + MSE_TOLERANCE
    return [
        _verdict(
            name, e["ratio_median"] <= 1 + MSE_TOLERANCE,
            f"median ratio to fit {e['ratio_median']:.2f} over {len(e['seeds'])} seeds, lower on {e['lower']} "
            f"(medians {e['tail_median']:.3g} vs {e['base_tail_median']:.3g})",
            f"{100 * coverage:.1f} % interval of the median ratio {low:.2f}–{high:.2f}"
            + ("" if resolved else ": a point estimate; these seeds cannot resolve 10 % either way"),
        ),
        _verdict(
            f"sine, {who}: the previous reading of that target (until 2026-11-27): medians of the MSE after "
            "the last step", previous_ok,
            f"medians {e['final_median']:.3g} vs {e['base_final_median']:.3g} ({previous:.2f}x); seed by seed, "
            f"median ratio {e['final_ratio_median']:.2f}",
            "information: a snapshot of a loss that swings by up to 100x within tens of steps this late "
            "(see Reading the results)",
            status="INFO: would " + ("PASS" if previous_ok else "FAIL"),
        ),
    ]


def _learning_verdicts(workload: str, variant: str, curves: list[dict]) -> list[dict]:
    """The first-steps check of a compiled path against the graph path and plain fit."""
    out = []
    for reference in ("rnnflow_graph", "fit"):
        name = f"{workload}, {variant} learns like {reference}"
        found = [c for c in curves if c["a"] == variant and c["b"] == reference and not c.get("timed")]
        out.append(_curve_verdict(name, found[0]) if found else
                   _verdict(name, None, "the learning check did not run (see the failed jobs)"))
    for curve in curves:
        if curve["a"] == variant and curve.get("timed"):
            out.append(_curve_verdict(f"{workload}, {variant} learns like {curve['b']} in the timed runs", curve))
    return out


def _curve_verdict(name: str, curve: dict) -> dict:
    worst = curve["max_rel_diff"]
    ok = worst is not None and worst <= CURVE_TOLERANCE and bool(curve["same_initial_weights"])
    steps = curve["seeds"][0]["steps"] if curve["seeds"] else 0
    what = (f"logged mean losses up to iteration {curve['upto']}" if curve.get("timed")
            else f"first {steps} step losses")
    return _verdict(
        f"{name}: {what} within {CURVE_TOLERANCE:g} relative",
        ok,
        f"max rel. diff {worst:.2g} over seeds {', '.join(str(s['seed']) for s in curve['seeds'])}"
        + ("" if curve["same_initial_weights"] else " (initial weights differ!)"),
    )


def mnist(summary: dict[str, Any], spec_variant: str, compiled: list[str]) -> list[dict]:
    """The MNIST targets, for the spec as written and for each compiled variant."""
    variants = summary["variants"]
    out = []
    for variant in [spec_variant] + [c for c in compiled if c != spec_variant]:
        if variant in variants:
            out.extend(_mnist_verdicts(variants, summary["curves"], variant, spec_variant))
    return out


def _mnist_verdicts(variants: dict, curves: list[dict], variant: str, spec_variant: str) -> list[dict]:
    mine = variants[variant]
    who = "spec as written" if variant == spec_variant else f"{variant} (override)"
    name = f"mnist, {who}: {ACCURACY_TARGET:.0%} test accuracy in less wall time than the TF1 program"
    out = []
    tf1 = variants.get("tf1")
    if tf1 is None:
        out.append(_verdict(name, None, "no successful run of tf1"))
    else:
        ours = mine["seconds_to_target_median"]
        if ours is None:
            out.append(_verdict(name, False, f"not reached in {mine['epochs']} epochs by every run "
                                             f"(epochs reached: {mine['epoch_reached']})"))
        elif tf1["seconds_to_target_median"] is not None:
            theirs = tf1["seconds_to_target_median"]
            out.append(_verdict(name, ours < theirs,
                                f"{ours:.1f} s (epochs {mine['epoch_reached']}) vs {theirs:.1f} s "
                                f"(epochs {tf1['epoch_reached']}), medians"))
        else:
            # A TF1 run that never got there would have needed more than its whole time: a lower bound.
            bound = median([r["seconds_to_target"] or r["total_seconds"] for r in tf1["reps"]])
            out.append(_verdict(name, True if ours < bound else None,
                                f"{ours:.1f} s (epochs {mine['epoch_reached']}) vs >= {bound:.1f} s: TF1 reached "
                                f"{ACCURACY_TARGET:.0%} in {sum(e is not None for e in tf1['epoch_reached'])} of "
                                f"{tf1['runs']} runs within {tf1['epochs']} epochs",
                                "" if ours < bound else "run more epochs (--mnist-epochs) to decide",
                                status=None if ours < bound else "INCONCLUSIVE"))
    if variant != "rnnflow_graph":
        out.extend(_learning_verdicts("mnist", variant, curves))
        graph = variants.get("rnnflow_graph")
        if graph is not None:
            ours, theirs = mine["final_accuracy_median"], graph["final_accuracy_median"]
            diffs = [abs(a - b) for ra, rb in zip(mine["reps"], graph["reps"]) if ra["seed"] == rb["seed"]
                     for a, b in zip(ra["accuracies"], rb["accuracies"])]
            out.append(_verdict(
                f"mnist, {variant}: final test accuracy no worse than rnnflow_graph's (within 0.5 points)",
                ours >= theirs - 0.005,
                f"median {100 * ours:.2f} % vs {100 * theirs:.2f} %; per-epoch differences up to "
                f"{100 * max(diffs, default=0):.2f} points (same seeds)"))
    return out
