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

With ``--cinn-reports``, the ``radynversion evaluate`` reports of full models trained with one
recipe on sets of several sizes (scored on the same held-out split) are added: their ``v``
error and round trip, with their own power laws. ``--replot OUT.json`` redraws from an earlier
run without training the yardsticks again.

    .venv/bin/python tools/learning_curve.py --first 12000 --train-until 20000 \
        --out docs/evaluation/learning_curve
    .venv/bin/python tools/learning_curve.py --replot docs/evaluation/learning_curve.json \
        --cinn-reports R3000/report.json docs/evaluation/report.json --out docs/evaluation/learning_curve

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

from radynversion.model import load_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

V_GOAL = 0.5  # the chromospheric v error, over the prior's
EMULATOR_GOAL_PCT = 2.0  # the round-trip goal, which the emulator's error bounds
ROUND_TRIP_GOAL_PCT = 2.0  # the round-trip goal


def power_law(n: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``log err = log a - b log n``."""
    slope, intercept = np.polyfit(np.log(n), np.log(err), 1)
    return float(np.exp(intercept)), float(-slope)


def needed(a: float, b: float, goal: float) -> float:
    """Training atmospheres at which ``a N^-b`` reaches ``goal`` (inf if it never does)."""
    return float((a / goal) ** (1.0 / b)) if b > 0 else float("inf")


def cinn_point(report_path: str) -> dict:
    """A full model's point from its ``radynversion evaluate`` report: its training atmospheres
    (from the checkpoint the report names), chromospheric ``v`` error over the prior's and
    median round trip."""
    report = json.loads(Path(report_path).read_text())
    model = report["model"]
    net = load_model(None if model.endswith("(packaged)") else model)
    return {"report": report_path, "model": model, "first_draws": report.get("first_draws"),
            "n_train": int(net.metadata["provenance"]["n_train"]),
            "v_ratio": report["parameters"]["v"]["chromosphere"]["error_ratio_to_prior"],
            "round_trip_pct": report["round_trip"]["misfit_median_pct"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint whose splits to use (default: packaged)")
    ap.add_argument("--first", type=int, default=12000, help="the first N draws (the model's set)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.0625, 0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--train-until", type=int, nargs="*", default=[],
                    help="extra points: the whole training split plus the draws below each label")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cinn-reports", nargs="*", default=[],
                    help="evaluate reports (report.json, scored on the same held-out split) of full "
                         "models trained with one recipe on different sets: plotted and fitted too")
    ap.add_argument("--replot", type=Path, default=None,
                    help="take the yardsticks' points from this earlier OUT.json instead of training")
    ap.add_argument("--out", type=Path, default=Path("learning_curve"), help="OUT.json and OUT.png")
    args = ap.parse_args()

    if args.replot is not None:
        rows = json.loads(args.replot.read_text())["points"]
    else:
        rows = yardstick_points(args)
    cinn = sorted((cinn_point(r) for r in args.cinn_reports), key=lambda c: c["n_train"])

    n = np.array([r["n_train"] for r in rows], dtype=float)
    curves = {"v_ratio": np.array([r["v_ratio"] for r in rows]),
              "emulator_halpha_pct": np.array([r["emulator_held_out_pct"][0] for r in rows]),
              "emulator_ca8542_pct": np.array([r["emulator_held_out_pct"][1] for r in rows])}
    upper = n >= n.max() / 4
    goals = {"v_ratio": V_GOAL, "emulator_halpha_pct": EMULATOR_GOAL_PCT,
             "emulator_ca8542_pct": EMULATOR_GOAL_PCT, "cinn_v_ratio": V_GOAL, "cinn_round_trip_pct": ROUND_TRIP_GOAL_PCT}
    series = {name: (n[upper], err[upper]) for name, err in curves.items()}
    if len(cinn) >= 2:
        n_c = np.array([c["n_train"] for c in cinn], dtype=float)
        series["cinn_v_ratio"] = (n_c, np.array([c["v_ratio"] for c in cinn]))
        series["cinn_round_trip_pct"] = (n_c, np.array([c["round_trip_pct"] for c in cinn]))
    fits = {}
    for name, (n_fit, err) in series.items():
        a, b = power_law(n_fit, err)
        fits[name] = {"a": a, "b": b, "goal": goals[name], "n_train_needed": needed(a, b, goals[name]),
                      "fitted_on_n_train": sorted({int(x) for x in n_fit})}
        print(f"{name}: err ~ {a:.3g} N^-{b:.3f} (N = {fits[name]['fitted_on_n_train']}); the goal "
              f"{goals[name]:g} needs N ~ {fits[name]['n_train_needed']:.3g} training atmospheres")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({
        "first": args.first, "model": args.model or "packaged", "points": rows, "cinn_points": cinn,
        "power_law_fits": fits}, indent=1) + "\n")
    plot(n, curves, cinn, fits, args.first, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


def yardstick_points(args: argparse.Namespace) -> list[dict]:
    """Train and score the regressor and the emulator at every size and seed."""
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
    return rows


def plot(n: np.ndarray, curves: dict, cinn: list[dict], fits: dict, first: int, path: Path) -> None:
    """Three log-log panels: the v error, the emulator's error, the full models' round trip."""
    fig, axes = plt.subplots(1, 3 if cinn else 2, figsize=(16 if cinn else 11, 4.3))
    reach = max(f["n_train_needed"] for f in fits.values())
    grid = np.geomspace(n.min(), min(max(reach, n.max() * 8), n.max() * 1e3), 100)
    n_c = np.array([c["n_train"] for c in cinn], dtype=float)
    panels = [(axes[0], [("v_ratio", "median regressor (chromospheric v)", "C0", n, curves.get("v_ratio"), "o")],
               "median error / prior's", V_GOAL, "goal 0.5", "chromospheric velocity"),
              (axes[1], [("emulator_halpha_pct", "emulator, H-alpha", "C3", n, curves["emulator_halpha_pct"], "o"),
                         ("emulator_ca8542_pct", "emulator, Ca II 8542", "C2", n, curves["emulator_ca8542_pct"], "o")],
               "held-out emulator RMS [% of peak]", EMULATOR_GOAL_PCT, "2 % (the round trip's floor)",
               "forward emulator")]
    if cinn:
        panels[0][1].append(("cinn_v_ratio", "cINN posterior median (v7's recipe)", "C1", n_c,
                             np.array([c["v_ratio"] for c in cinn]), "s"))
        panels.append((axes[2], [("cinn_round_trip_pct", "cINN round trip (v7's recipe)", "C1", n_c,
                                  np.array([c["round_trip_pct"] for c in cinn]), "s")],
                       "median round trip [% of peak]", ROUND_TRIP_GOAL_PCT, "goal 2 %", "round trip"))
    for ax, series, ylabel, goal, goal_label, title in panels:
        for name, label, colour, x, y, marker in series:
            ax.plot(x, y, marker, color=colour, alpha=0.75, label=label)
            if name in fits:
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
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7.5)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Learning curves on the held-out split of the first {first} draws "
                 "(grey: the largest yardstick set)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
