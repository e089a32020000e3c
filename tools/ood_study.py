"""Which inference-time evidence flags atmospheres unlike the training prior (issue 23, Deliver 5).

Observes populations as ``radynversion evaluate`` does (CRISP's default program, its
transmission, 1 % noise), inverts them with a model, and scores candidate out-of-distribution
scores, each set so that 97 % of the model's own held-out draws pass:

* ``misfit``: the round-trip misfit (64 draws);
* ``pca``: a Gaussian in the PCA space of the standardised observed profiles (training
  observations), plus the residual off that space, as a chi-square-like sum;
* ``knn``: mean distance to the 10 nearest training observations in the whitened PCA space;
* ``model``: the model's own ``ood_score`` (:mod:`radynversion.model.trust`, the reference it
  carries), trusted where at most 1, as every result's ``trusted``.

For each population: the share of pixels trusted, and the cross-prior score on all pixels
and on trusted ones.

    .venv/bin/python tools/ood_study.py --first 12000 --population check=../shared/external/check_v1.nc \\
        --population smooth=data/smooth.zarr --out runs/ood_study.json

A population ``NAME=UNION.toml:COMPONENT`` is that component of a training union
(:func:`radynversion.datasets.training_union`, with the union's sample labels), and
``--held-out`` keeps only the draws of each such population in its evaluation split: how a
model trained on that union is scored on the generators it saw, without its training draws.
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import torch
from _observe import observe_crisp  # tools/_observe.py

from radynversion import load_model
from radynversion.atmosphere import VARIABLES
from radynversion.datasets import training_set, training_union
from radynversion.evaluate import cross_prior_scores, open_population
from radynversion.model import evaluation_split, sample_labels
from radynversion.model.posterior import posterior

warnings.filterwarnings("ignore")
Q = (0.05, 0.16, 0.5, 0.84, 0.95)


def invert(net, y, samples):
    res = posterior(net, y, np.arange(y.shape[0]), samples=samples, quantiles=Q, seed=0, misfit=True,
                    precision="fp32", sampling="sobol")
    q = {v: np.moveaxis(res.quantiles[:, :, k, :], 1, 2) for k, v in enumerate(VARIABLES)}  # (N, H, 5)
    return q, res.misfit


class PCAScore:
    def __init__(self, y_train, k=12):
        self.mu = y_train.mean(0)
        self.sd = y_train.std(0) + 1e-6
        z = (y_train - self.mu) / self.sd
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        self.v = vt[:k].T
        self.var = (s[:k] ** 2) / (z.shape[0] - 1)
        resid = z - (z @ self.v) @ self.v.T
        self.res_var = float(np.mean(np.sum(resid**2, axis=1)))
        self.train_white = (z @ self.v) / np.sqrt(self.var)

    def white(self, y):
        return (((y - self.mu) / self.sd) @ self.v) / np.sqrt(self.var)

    def pca(self, y):
        z = (y - self.mu) / self.sd
        proj = z @ self.v
        resid = z - proj @ self.v.T
        return np.sum(proj**2 / self.var, axis=1) + np.sum(resid**2, axis=1) / self.res_var * len(self.var)

    def knn(self, y, k=10):
        w = torch.as_tensor(self.white(y))
        t = torch.as_tensor(self.train_white)
        out = []
        for chunk in torch.split(w, 512):
            d = torch.cdist(chunk, t)
            out.append(d.topk(k, largest=False).values.mean(1))
        return torch.cat(out).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--first", type=int, default=12000)
    ap.add_argument("--population", action="append", default=[], help="name=path")
    ap.add_argument("--train-obs", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--out", default=None)
    ap.add_argument("--held-out", dest="held_out", action="store_true",
                    help="union populations: only their evaluation split")
    a = ap.parse_args()
    net = load_model(a.model)
    torch.set_num_threads(1)
    data = training_set()
    data = data.isel(sample=sample_labels(data) < a.first)
    held = evaluation_split(sample_labels(data))
    rng = np.random.default_rng(0)
    tr_idx = rng.choice(np.flatnonzero(~held), size=min(a.train_obs, int((~held).sum())), replace=False)
    y_tr = observe_crisp(data.isel(sample=tr_idx), net, seed=7)
    y_tr = y_tr[np.isfinite(y_tr).all(1)]
    scorer = PCAScore(y_tr)
    pops = {"held-out": data.isel(sample=np.flatnonzero(held))}
    for spec in a.population:
        name, path = spec.split("=", 1)
        if ".toml:" in path:
            union, component = path.split(".toml:", 1)
            ds = training_union(union + ".toml")
            ds = ds.isel(sample=np.flatnonzero(np.asarray(ds["population"].values) == component))
            if a.held_out:
                ds = ds.isel(sample=np.flatnonzero(evaluation_split(sample_labels(ds))))
            pops[name] = ds
        else:
            pops[name] = open_population(path)
    h = net.height_Mm.cpu().numpy()
    report = {}
    thresholds = {}
    for name, ds in pops.items():
        y = observe_crisp(ds, net)
        ok = np.isfinite(y).all(1)
        ds, y = ds.isel(sample=np.flatnonzero(ok)), y[ok]
        q, misfit = invert(net, y, a.samples)
        scores = {"misfit": misfit, "pca": scorer.pca(y), "knn": scorer.knn(y)}
        if net.trust is not None:
            scores["model"] = net.trust.scores(y, misfit)
        truth = {v: np.asarray(ds[v].values, dtype=float) for v in VARIABLES}
        if name == "held-out":
            thresholds = {k: float(np.quantile(s, 0.97)) for k, s in scores.items()}
            thresholds["model"] = 1.0  # the model's own threshold
        entry = {"n": int(y.shape[0]), "all": cross_prior_scores(q, truth, h)}
        for k, s in scores.items():
            keep = s <= thresholds[k]
            sub_q = {v: q[v][keep] for v in VARIABLES}
            sub_t = {v: truth[v][keep] for v in VARIABLES}
            entry[k] = {"trusted": float(keep.mean()), "median_score": float(np.median(s)),
                        "trusted_scores": cross_prior_scores(sub_q, sub_t, h) if keep.sum() > 10 else None}
        report[name] = entry
        line = [f"{name:10s} n={entry['n']:5d}"]
        for k in scores:
            line.append(f"{k}: trusted {entry[k]['trusted']:.2f}")
        print("  ".join(line), flush=True)
        for k in ("all", *scores):
            sc = entry[k] if k == "all" else entry[k]["trusted_scores"]
            if sc:
                print(f"    {k:7s} " + "  ".join(
                    f"{v} cov68 {sc[v]['coverage68']:.2f} err {sc[v]['median_abs_error']:.3g} "
                    f"[base {sc[v]['baseline_median_abs_error']:.3g}]" for v in VARIABLES), flush=True)
    report["thresholds_97pct_held_out"] = thresholds
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
