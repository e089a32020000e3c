"""How do the errors fall with the number of training atmospheres? Learning curves.

Trains the two yardsticks of this folder on random fractions of a model's training split (and,
with ``--train-until``, on that split plus the draws added to the store since) and scores each
on the same held-out split:

* ``v``: the median regressor's chromospheric ``v`` error over the prior's
  (``tools/median_regressor.py``, ``v`` alone, trained at the model points, scored on CRISP's
  program with 1 % noise, as ``radynversion evaluate`` scores the posterior median);
* the emulator: the dense emulator's held-out median RMS per line, % of the joint peak
  (``tools/emulator_study.py``, v7's 3 x 512).

Each point keeps the number of optimiser steps about equal (more epochs on smaller fractions).
A power law ``err = a N^-b`` is fitted to the points with at least a quarter of the largest
``N`` (the curves steepen with ``N``, so the smaller points would flatten it), and the number of
training atmospheres each goal would need at that rate is printed: the issue's ``v`` error of
half the prior's, and an emulator error of 2 % (the round trip cannot be lower than the
emulator's error on the true atmospheres, plus the noise). Writes ``OUT.json`` and ``OUT.png``.

    .venv/bin/python tools/learning_curve.py --first 12000 --out docs/evaluation/learning_curve

About 15 minutes on one CPU thread with the default fractions and two seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import emulator_study  # tools/emulator_study.py
import matplotlib
import matplotlib.ticker
import median_regressor  # tools/median_regressor.py
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

V_GOAL = 0.5  # the chromospheric v error, over the prior's
EMULATOR_GOAL_PCT = 2.0  # the round-trip goal, which the emulator's error bounds


def power_law(n: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``log err = log a - b log n``."""
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)
    return float(np.exp(intercept)), float(-slope)


def needed(a: float, b: float, goal: float) -> float:
    """Training atmospheres at which ``a N^-b`` reaches ``goal`` (inf if it never does)."""
    return float((a / goal) ** (1.0 / b)) if b > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint whose splits to use (default: packaged)")
    ap.add_argument("--first", type=int, default=12000, help="the first N draws (the model's set)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0625, 0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--train-until", type=int, nargs="*", default=[],
                    help="extra points: the whole training split plus the draws below each label")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=Path("learning_curve"), help="OUT.json and OUT.png")
    args = ap.parse_args()

    points = [(f, None) for f in args.fractions] + [(1.0, u) for u in args.train_until]
    rows = []
    for seed in args.seeds:
        for fraction, until in points:
            common = ["--first", str(args.first), "--train-fraction", str(fraction), "--seed", str(seed)]
            common += ["--train-until", str(until)] if until else []
            common += ["--model", args.model] if args.model else []
            reg = median_regressor.fit(median_regressor.parser().parse_args(
                [*common, "--variables", "v", "--epochs", str(min(480, round(60 / fraction)))]))
            emu = emulator_study.fit(emulator_study.parser().parse_args(
                [*common, "--layers", "3", "--epochs", str(min(600, round(150 / fraction)))]))
            rows.append({"seed": seed, "train_fraction": fraction, "train_until": until,
                         "n_train": reg["n_train"], "v_ratio": reg["ratio"]["v"],
                         "emulator_held_out_pct": emu["rms_pct"]["held out"]})
            print(f"-> N = {reg['n_train']}: v {reg['ratio']['v']:.3f}, emulator "
                  f"{emu['rms_pct']['held out'][0]:.2f} / {emu['rms_pct']['held out'][1]:.2f} %", flush=True)

    n = np.array([r["n_train"] for r in rows], dtype=float)
    curves = {"v_ratio": np.array([r["v_ratio"] for r in rows]),
              "emulator_halpha_pct": np.array([r["emulator_held_out_pct"][0] for r in rows]),
              "emulator_ca8542_pct": np.array([r["emulator_held_out_pct"][1] for r in rows])}
    upper = n >= n.max() / 4
    fits = {}
    for name, err in curves.items():
        a, b = power_law(n[upper], err[upper])
        goal = V_GOAL if name == "v_ratio" else EMULATOR_GOAL_PCT
        fits[name] = {"a": a, "b": b, "goal": goal, "n_train_needed": needed(a, b, goal),
                      "fitted_on_n_train": sorted({int(x) for x in n[upper]})}
        print(f"{name}: err ~ {a:.3g} N^-{b:.3f} (N >= {n.max() / 4:.0f}); the goal {goal:g} needs "
              f"N ~ {fits[name]['n_train_needed']:.3g} training atmospheres (now {n.max():.0f})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({
        "first": args.first, "model": args.model or "packaged", "points": rows, "power_law_fits": fits},
        indent=1) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    reach = max(f["n_train_needed"] for f in fits.values())
    grid = np.geomspace(n.min(), min(max(reach, n.max() * 8), n.max() * 1e3), 100)
    panels = [(axes[0], [("v_ratio", "chromospheric v (median regressor)", "C0")],
               "median error / prior's", V_GOAL, "goal 0.5"),
              (axes[1], [("emulator_halpha_pct", "H-alpha", "C3"), ("emulator_ca8542_pct", "Ca II 8542", "C2")],
               "held-out emulator RMS [% of peak]", EMULATOR_GOAL_PCT, "round-trip goal 2 %")]
    for ax, series, ylabel, goal, goal_label in panels:
        for name, label, colour in series:
            ax.plot(n, curves[name], "o", color=colour, alpha=0.7, label=label)
            f = fits[name]
            ax.plot(grid, f["a"] * grid ** -f["b"], "--", color=colour, lw=1,
                    label=f"fit N^-{f['b']:.2f}: goal at N ~ {f['n_train_needed']:.2g}")
        ax.axhline(goal, color="k", lw=0.8, ls=":", label=goal_label)
        ax.axvline(n.max(), color="0.6", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("training atmospheres")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("velocity: posterior-median stand-in", fontsize=10)
    axes[1].set_title("forward emulator", fontsize=10)
    fig.suptitle(f"Learning curves on the held-out split of the first {args.first} draws "
                 "(grey: the largest set tried)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
