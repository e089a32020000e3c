"""Train-on-X / test-on-Y: the cross-prior score of several models on several populations.

Every model is scored on every population by ``radynversion.evaluate.evaluate``, as
``radynversion evaluate`` scores one pair (CRISP's default program, the model's transmission,
1 % noise): on the population's held-out split where the model was trained on that store
(its own evaluation split), on the whole population otherwise. The table holds the issue 23
score (``summary["cross_prior"]``): on the chromosphere band from 0.5 Mm up to 2 Mm, below
each atmosphere's transition region, the 68 / 90 % coverage of the posterior intervals and
the median absolute error of the posterior median for ``log_T``, ``log_ne`` and ``v``, each
beside the population's own marginal baseline (its per-height median as the answer, its
16-84 / 5-95 % ranges as intervals).

Usage (from the repository root)::

    .venv/bin/python tools/cross_prior.py --models default=default \\
        --data prior=data/prior.zarr check_v1=../shared/external/check_v1.nc \\
               smooth=data/smooth.zarr \\
        --first 12000 --out docs/evaluation/cross_prior

writes ``cross_prior.md`` (the table) and ``cross_prior.json`` (every pair's settings,
identities and scores) into ``--out``. A Zarr store contributes its finished shards only
(``radynversion.datasets.training_set``), so a store still being synthesised is scored on
what exists; the JSON records how many atmospheres each score rests on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from radynversion.datasets import DEFAULT_SET_LABELS, training_set_path
from radynversion.evaluate import EvaluationSettings, cross_prior_lines, evaluate, open_population
from radynversion.model import load_model, sample_labels

VARIABLES = ("log_T", "log_ne", "v")  # the order


def _named(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{what} {item!r}: expected NAME=PATH")
        out[name] = path
    return out


def _split(net, path: str, choice: str) -> str:  # noqa: ANN001 - PosteriorModel
    """``held-out`` where the model was trained on the store at ``path`` (by the source its
    checkpoint records), else ``all``; or the split asked for."""
    if choice != "auto":
        return choice
    src = str(net.metadata.get("provenance", {}).get("source", ""))
    if not src:
        return "all"
    trained_on = training_set_path() if src in DEFAULT_SET_LABELS else Path(src)
    return "held-out" if trained_on.resolve() == Path(path).resolve() else "all"


def _row(model: str, store: str, summary: dict) -> dict:
    cp = summary["cross_prior"]
    return {"model": model, "data": store, "split": summary["split"], "atmospheres": cp["atmospheres"],
            "nodes": cp["nodes"],
            **{v: {k: cp[v][k] for k in ("coverage68", "coverage90", "median_abs_error", "baseline_coverage68",
                                         "baseline_coverage90", "baseline_median_abs_error")} for v in VARIABLES}}


def markdown(rows: list[dict]) -> str:
    """The table: per pair, the model's row and the population's own marginals below it."""
    head = ("| model | tested on | split | atmospheres | 68 / 90 % coverage log_T | log_ne | v "
            "| median error log_T, log_ne (dex), v (km/s) |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        split = "held-out" if r["split"].startswith("held-out") else "all"
        for who, pre in ((r["model"], ""), ("its own marginals", "baseline_")):
            cov = " | ".join(f"{r[v][pre + 'coverage68']:.2f} / {r[v][pre + 'coverage90']:.2f}" for v in VARIABLES)
            err = ", ".join(f"{r[v][pre + 'median_abs_error']:.3g}" for v in VARIABLES)
            where = f"{r['data']} | {split} | {r['atmospheres']}" if not pre else "| |"
            lines.append(f"| {who} | {where} | {cov} | {err} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", required=True,
                    help="NAME=CHECKPOINT ... (CHECKPOINT 'default' = the packaged model)")
    ap.add_argument("--data", nargs="+", required=True,
                    help="NAME=PATH ...: Zarr stores or netCDF files of profiles and atmospheres")
    ap.add_argument("--out", type=Path, required=True, help="folder of cross_prior.md and cross_prior.json")
    ap.add_argument("--split", choices=["auto", "held-out", "all"], default="auto",
                    help="auto (default): held-out on the store a model was trained on, all elsewhere")
    ap.add_argument("--first", type=int, default=None,
                    help="only the draws with sample label < N of every population (as evaluate --first)")
    ap.add_argument("--samples", type=int, default=512, help="posterior draws per atmosphere")
    ap.add_argument("--noise", type=float, default=0.01, help="noise, fraction of the joint peak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-samples", type=int, default=None, help="at most this many atmospheres per pair")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models, stores = _named(args.models, "--models"), _named(args.data, "--data")
    base = EvaluationSettings(samples=args.samples, noise=args.noise, seed=args.seed, max_samples=args.max_samples)

    populations = {}
    for name, path in stores.items():
        data = open_population(path)
        if args.first is not None:
            data = data.isel(sample=np.flatnonzero(sample_labels(data) < args.first)).assign_attrs(
                first_draws=int(args.first))
        populations[name] = data
        print(f"{name}: {path}, {data.sizes['sample']} atmospheres", file=sys.stderr)

    rows, reports = [], []
    for mname, mpath in models.items():
        net = load_model(None if mpath == "default" else mpath)
        for dname, data in populations.items():
            t0 = time.perf_counter()
            split = _split(net, stores[dname], args.split)
            summary = evaluate(net, data, base.changed(split=split)).summary
            print(f"== {mname} on {dname} ({split}, {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            print("\n".join(cross_prior_lines(summary)), file=sys.stderr)
            rows.append(_row(mname, dname, summary))
            reports.append({"model_name": mname, "data_name": dname,
                            **{k: summary[k] for k in ("model", "model_sha256", "data", "split", "n_evaluated",
                                                       "samples_per_pixel", "noise_fraction_of_peak", "instrument",
                                                       "seed", "precision", "cross_prior")},
                            **({"first_draws": summary["first_draws"]} if "first_draws" in summary else {})})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cross_prior.md").write_text(markdown(rows))
    (args.out / "cross_prior.json").write_text(json.dumps({"rows": rows, "reports": reports}, indent=2,
                                                          default=float) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
