"""The train-on-X / test-on-Y table of issue 23 from ``tools/ood_study.py`` reports.

Each report is one model (trained on X) scored on the same populations (held-out draws of the
old prior, of each generator, and ``check_v1``); this prints one Markdown row per model and
population: 68 / 90 % coverage and the median error of each parameter beside the population's
own marginal-median baseline, on all pixels, and the share the model trusts.

    .venv/bin/python tools/train_test_table.py "prior (v7)=docs/evaluation/trust/union_v9_heldout_v7.json" \\
        "union v9=docs/evaluation/trust/union_v9_heldout_v9.json" > docs/evaluation/trust/train_test_table.md

With ``--plot PNG`` it also draws the 68 % coverage as one grid per parameter (trained on x
tested on), coloured by the distance from nominal.

Below each model's rows, where its report holds the held-out draws of all three generators, a
``pooled`` row gives the coverage over their nodes together: the held-out splits are the same
share of every component, so the pool is the model's training mixture, the distribution on
which a Bayesian posterior is calibrated as a whole (errors are not pooled: a median of medians
is not a median).

With ``--logo`` each argument is ``POPULATION=REPORT``, the report of a model trained without
that generator (``held-out`` is the old prior): the leave-one-generator-out table, one row per
left-out generator, on all pixels and on the pixels the model trusts, each cell marked where it
misses issue 23's bar (coverage within 0.05 of nominal, error below the baseline).

    .venv/bin/python tools/train_test_table.py --logo "held-out=J_no_prior" "smooth_held=J_no_smooth"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"held-out": "old prior", "smooth_held": "smooth", "noneq_held": "noneq", "check": "check_v1"}
UNITS = {"log_T": "dex", "log_ne": "dex", "v": "km/s"}


def plot(reports: list[tuple[str, dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in NAMES if all(k in r for _, r in reports)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.9 * len(reports) + 2.2), constrained_layout=True)
    for ax, v in zip(axes, ("log_T", "log_ne", "v"), strict=True):
        cov = np.array([[r[k]["all"][v]["coverage68"] for k in keys] for _, r in reports])
        im = ax.imshow(np.abs(cov - 0.68), cmap="Reds", vmin=0.0, vmax=0.5)
        for i in range(cov.shape[0]):
            for j in range(cov.shape[1]):
                ax.text(j, i, f"{cov[i, j]:.2f}", ha="center", va="center", fontsize=10,
                        color="white" if abs(cov[i, j] - 0.68) > 0.3 else "black")
        ax.set_xticks(range(len(keys)), [NAMES[k] for k in keys], rotation=20)
        ax.set_yticks(range(len(reports)), [n for n, _ in reports] if v == "log_T" else [])
        ax.set_title(v)
        ax.set_xlabel("tested on (held-out draws)")
    axes[0].set_ylabel("trained on")
    fig.suptitle("68 % interval coverage at 0.5-2 Mm below the transition region (nominal 0.68)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="|coverage - 0.68|")
    fig.savefig(path, dpi=110)


#: the three parameter columns of both tables
PARAMETER_COLUMNS = ("`log_T` 68/90 %, error [baseline] | `log_ne` 68/90 %, error [baseline] | "
                     "`v` 68/90 %, error [baseline] |")


def _cell(s: dict, mark: bool = False) -> str:
    """68/90 % coverage, error [baseline]; with ``mark``, a miss of issue 23's bar (coverage
    within 0.05 of nominal, error below the baseline) marked with an asterisk."""
    miss = (abs(s["coverage68"] - 0.68) > 0.05 or abs(s["coverage90"] - 0.90) > 0.05
            or not s["median_abs_error"] < s["baseline_median_abs_error"])
    return (f"{s['coverage68']:.2f}/{s['coverage90']:.2f}, {s['median_abs_error']:.3g} "
            f"[{s['baseline_median_abs_error']:.3g}]" + (" *" if mark and miss else ""))


#: the populations drawn from the training generators (the mixture a union is trained on)
GENERATORS = ("held-out", "smooth_held", "noneq_held")


def pooled_row(name: str, report: dict) -> str | None:
    """The Markdown row of the coverage over the held-out nodes of every training generator
    together (None unless the report holds all of them)."""
    if not all(k in report for k in GENERATORS):
        return None
    nodes = {k: report[k]["all"]["nodes"] for k in GENERATORS}
    total = sum(nodes.values())
    cells = []
    for v in ("log_T", "log_ne", "v"):
        c68, c90 = (sum(report[k]["all"][v][c] * nodes[k] for k in GENERATORS) / total
                    for c in ("coverage68", "coverage90"))
        cells.append(f"{c68:.2f}/{c90:.2f}")
    n = sum(report[k]["n"] for k in GENERATORS)
    return f"| {name} | pooled: the three generators' held-out draws ({n}) | | " + " | ".join(cells) + " |"


def logo(specs: list[str]) -> None:
    print("| left out (tested on its held-out draws) | pixels | trusted | " + PARAMETER_COLUMNS)
    print("|---|---|---|---|---|---|")
    for spec in specs:
        key, path = spec.split("=", 1)
        e = json.loads(Path(path).read_text())[key]
        for label, scores in (("all", e["all"]), ("trusted", e["model"]["trusted_scores"])):
            n = e["n"] if label == "all" else scores["atmospheres"]
            trusted = f"{e['model']['trusted']:.2f}" if label == "all" else ""
            print(f"| {NAMES[key]}, {label} | {n} | {trusted} | "
                  + " | ".join(_cell(scores[v], mark=True) for v in ("log_T", "log_ne", "v")) + " |")


def main(specs: list[str]) -> None:
    if specs and specs[0] == "--logo":
        logo(specs[1:])
        return
    out_png = None
    if "--plot" in specs:
        i = specs.index("--plot")
        out_png = specs[i + 1]
        specs = specs[:i] + specs[i + 2:]
    loaded = []
    print("| trained on | tested on (pixels) | trusted | " + PARAMETER_COLUMNS)
    print("|---|---|---|---|---|---|")
    for spec in specs:
        name, path = spec.split("=", 1)
        report = json.loads(Path(path).read_text())
        loaded.append((name, report))
        for key, label in NAMES.items():
            if key not in report:
                continue
            e = report[key]
            cells = [_cell(e["all"][v]) for v in ("log_T", "log_ne", "v")]
            print(f"| {name} | {label} ({e['n']}) | {e['model']['trusted']:.2f} | " + " | ".join(cells) + " |")
        row = pooled_row(name, report)
        if row:
            print(row)
    if out_png:
        plot(loaded, out_png)


if __name__ == "__main__":
    main(sys.argv[1:])
