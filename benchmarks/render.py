"""A benchmark run as markdown: the target verdicts, one table per workload, the machine.
Standard library only; it computes nothing (`stats.py`) and judges nothing (`verdicts.py`).
"""

from __future__ import annotations

from typing import Any

LABELS = {
    "rnnflow_xla": "rnnflow, train.jit_compile=true (XLA)",
    "rnnflow_graph": "rnnflow, train.jit_compile=false (graph)",
    "rnnflow_xla_unroll": "rnnflow, XLA + model.unroll=true",
    "rnnflow_graph_unroll": "rnnflow, graph + model.unroll=true",
    "rnnflow_xla_dynamic": "rnnflow, XLA (dynamic loop)",
    "rnnflow_xla_keras_loop": "rnnflow, XLA + model.loop=keras",
    "fit": "plain Keras `fit`",
    "tf1": "TF1 program (`tf.compat.v1`)",
}


def label(variant: str, spec_variant: str | None = None) -> str:
    text = LABELS.get(variant, variant)
    return f"{text} — *spec as written*" if variant == spec_variant else text


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: dict[str, Any], title: str = "rnnflow benchmark results", level: int = 2) -> str:
    """The results as markdown: the target verdicts, one table per workload, the machine.

    Args:
        results: what run.py writes to results.json.
        title: the top heading (none when empty).
        level: the heading level of the sections (3 inside the benchmarks README).
    """
    config, summary, machine = results["config"], results["summary"], results["machine"]
    lines = [f"# {title}", ""] if title else []
    if config.get("quick"):
        lines += ["**Quick run (`--quick`): tiny iteration counts and data, to check the harness only. "
                  "These numbers are not measurements.**", ""]
    lines += [f"Measured {machine['date_utc']} on {machine['cpu']} ({machine['cores']} cores, "
              f"{machine['ram_gib']} GiB RAM); rnnflow {machine.get('rnnflow_commit')}"
              f"{' (uncommitted changes)' if machine.get('rnnflow_dirty') else ''}; "
              f"command: `{results.get('command', '')}`; {results.get('minutes', 0):.0f} min.", ""]

    verdicts = summary.get("sine", {}).get("verdicts", []) + summary.get("mnist", {}).get("verdicts", [])
    if verdicts:
        lines += ["## Targets", ""]
        lines += [note + "\n" for w in summary.values() for note in w.get("notes", [])]
        lines += ["| target | result | numbers |", "|---|---|---|"]
        for v in verdicts:
            note = f" — {v['note']}" if v["note"] else ""
            lines.append(f"| {v['target']} | **{v['status']}** | {v['numbers']}{note} |")
        lines.append("")

    sine = summary.get("sine")
    if sine and sine["variants"]:
        spec_variant = sine["spec_variant"]
        lines += [f"## Sine forecast ({config['iterations']} iterations, batch 1, seeds "
                  f"{', '.join(map(str, config['seeds']))})", "",
                  f"Steady state = iterations {config['warmup'] + 1}–{config['iterations']}; incl. compile = all "
                  "iterations from the first training call (tracing and XLA compilation included, process start-up "
                  "not). Medians over the runs; peak RSS is the largest of the runs.", "",
                  "| program | ms/iter steady, median (min) | ms/iter incl. compile | CPU ms/iter | final MSE, median "
                  "| final MSE per seed | peak RSS MB | process s | load before |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for variant in _order(sine["variants"]):
            s = sine["variants"][variant]
            per_seed = " / ".join(f"{m:.2g}" for _, m in sorted(s["final_mse"].items(), key=lambda kv: int(kv[0])))
            lines.append(f"| {label(variant, spec_variant)} "
                         f"| {_fmt(s['ms_steady_median'])} ({_fmt(s['ms_steady_min'])}) "
                         f"| {_fmt(s['ms_total_median'])} | {_fmt(s['cpu_ms_median'])} "
                         f"| {_fmt(s['final_mse_median'], '.3g')} | {per_seed} | {s['max_rss_mb']:.0f} "
                         f"| {_fmt(s['process_seconds_median'], '.0f')} | {_fmt(s['load_before_median'], '.1f')} |")
        lines += ["", *_end_table(sine.get("end", {}), spec_variant, config), "", *_curve_table(sine["curves"]), ""]

    mnist = summary.get("mnist")
    if mnist and mnist["variants"]:
        spec_variant = mnist["spec_variant"]
        images = config.get("train_limit") or 60000
        lines += [f"## MNIST ({config['mnist_epochs']} epochs of {images} images, batch 150, seeds "
                  f"{', '.join(map(str, config['mnist_seeds']))})", "",
                  "Epoch times include the evaluation of the test set after every epoch (every program does "
                  "it); time to 97 % is counted from the first training call.", "",
                  "| program | epoch 1 s | later epochs s, median | 97 % reached at epoch (per seed) "
                  "| time to 97 %, median s | test accuracy % per epoch (first seed) | peak RSS MB | load before |",
                  "|---|---|---|---|---|---|---|---|"]
        for variant in _order(mnist["variants"]):
            s = mnist["variants"][variant]
            accuracies = " ".join(f"{100 * a:.2f}" for a in s["reps"][0]["accuracies"])
            reached = ", ".join("–" if e is None else str(e) for e in s["epoch_reached"])
            lines.append(f"| {label(variant, spec_variant)} | {_fmt(s['first_epoch_seconds_median'])} "
                         f"| {_fmt(s['later_epoch_seconds_median'])} | {reached} "
                         f"| {_fmt(s['seconds_to_target_median'], '.1f')} | {accuracies} | {s['max_rss_mb']:.0f} "
                         f"| {_fmt(s['load_before_median'], '.1f')} |")
        lines += ["", *_curve_table(mnist["curves"]), ""]

    lines += ["## Machine", "", "| | |", "|---|---|",
              f"| CPU | {machine['cpu']} |",
              f"| cores | {machine['cores']} ({machine['cores_usable']} usable) |",
              f"| RAM | {machine['ram_gib']} GiB |",
              f"| OS | {machine['os']} |"]
    versions = results.get("versions", {})
    for key, name in (("python", "Python"), ("tensorflow", "TensorFlow"), ("keras", "Keras"),
                      ("TF1 programs: python", "TF1 programs: Python"),
                      ("TF1 programs: tensorflow", "TF1 programs: TensorFlow"),
                      ("TF1 programs: tf_keras", "TF1 programs: tf-keras")):
        if key in versions:
            lines.append(f"| {name} | {versions[key]} |")
    lines += [f"| load average (1, 5, 15 min) at the start | {machine['load_average']} |",
              f"| load average at the end | {results.get('load_average_end')} |"]
    failed = [r for r in results["records"] if r.get("error")]
    if failed:
        lines += ["", "## Failed jobs", ""]
        lines += [f"- `{r['job']}`: {r['error']}" for r in failed]
    text = "\n".join(lines)
    if level != 2:
        text = "\n".join("#" * level + line[2:] if line.startswith("## ") else line for line in text.splitlines())
    return text + "\n"


def _order(variants: dict) -> list[str]:
    rank = {"rnnflow_xla": 0, "rnnflow_xla_unroll": 1, "rnnflow_graph": 2, "fit": 8, "tf1": 9}
    return sorted(variants, key=lambda v: (rank.get(v, 5), v))


def _end_table(end: dict, spec_variant: str, config: dict) -> list[str]:
    if not end:
        return []
    tail = config.get("tail", 200)
    lines = [f"End of training, seed by seed against plain `fit` (same seed, same initial weights): the mean "
             f"training loss of the last {tail} steps (what Keras reports as the loss of an epoch of those "
             "steps), over the timed seeds and the extra seeds; the MSE after the last step alongside. "
             "TF1 draws its own initial weights, so its ratios are not paired.", "",
             f"| program | seeds | median ratio to fit (interval, coverage) | lower than fit | mean of last {tail}, median "
             "| fit's | after last step, median | fit's | ratio per seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant in _order(end):
        e = end[variant]
        per_seed = " / ".join(f"{s}: {r:.2f}" for s, r in e["ratio"].items())
        interval = e.get("ratio_interval")
        within = f" ({interval[0]:.2f}–{interval[1]:.2f}, {100 * interval[2]:.1f} %)" if interval else ""
        lines.append(f"| {label(variant, spec_variant)} | {len(e['seeds'])} | {e['ratio_median']:.2f}{within} "
                     f"| {e['lower']} of {len(e['seeds'])} | {e['tail_median']:.3g} | {e['base_tail_median']:.3g} "
                     f"| {e['final_median']:.3g} | {e['base_final_median']:.3g} | {per_seed} |")
    return lines


def _curve_table(curves: list[dict]) -> list[str]:
    if not curves:
        return []
    lines = ["Learning check: training loss of each of the first steps (one step per call), same seed and initial "
             "weights; *timed runs*: the mean losses the timed runs logged up to iteration 50 (several steps per "
             "compiled call, as measured).", "",
             "| compared | points | max relative difference | per seed | same initial weights |",
             "|---|---|---|---|---|"]
    for c in curves:
        per_seed = ", ".join(f"{s['seed']}: {s['max_rel_diff']:.1g}" for s in c["seeds"])
        steps = c["seeds"][0]["steps"] if c["seeds"] else 0
        what = f"{c['a']} vs {c['b']}" + (", timed runs" if c.get("timed") else "")
        lines.append(f"| {what} | {steps} | {_fmt(c['max_rel_diff'], '.2g')} | {per_seed} "
                     f"| {'yes' if c['same_initial_weights'] else 'NO'} |")
    return lines
