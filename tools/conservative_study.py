"""Conservative variants of the conditional INN off its prior, against a plain NPE (issue 23, Deliver 2).

Every variant answers one question: when the atmosphere comes from a generator the model never
saw, do its intervals still hold the truth as often as they say? The models here were trained
on the old prior only (v7 and its seed twins), so the smooth and non-equilibrium generators
are leave-one-generator-out tests of them, and ``../shared/external/check_v1.nc`` an
evaluation-only population. The old prior's held-out split measures the in-prior price.

Variants (all at ``--samples`` draws per pixel, CRISP's default program, its transmission, 1 %
noise, as ``radynversion evaluate`` observes):

* ``inflate-T``: the latent draws scaled by ``T`` (``z ~ N(0, T^2 I)``), one factor for all
  pixels: the model's own posterior, widened in every direction the flow maps the latent to.
* ``adaptive-B``: per pixel ``T = clip(s^B, 1, 3)`` with ``s`` the profiles' part of the
  model's ``ood_score`` (their density under the training observations over its threshold,
  :mod:`radynversion.model.trust`; known before any draw): in-distribution pixels (``s <= 1``)
  are untouched, unfamiliar ones widened the more the less familiar their profiles are.
* ``ensemble``: the mixture of independently trained members (equal draws from each), with
  the same options.
* ``+agree`` (ensembles): trusted only where the members agree as well, their medians
  within their widths as on 97 % of the held-out split (:func:`disagreement`).
* ``npe``: a plain neural posterior estimator as the yardstick: a mixture density network
  (8 full-covariance Gaussians; Papamakarios & Murray 2016) over the first 24 principal
  components of the standardised atmosphere plus a diagonal Gaussian residual, conditioned on
  the observed profiles through an MLP; trained here on the model's own training draws observed
  through the same program (4 noise draws each), early-stopped on a validation split.

Inflation factors are chosen on one left-out generator (``--tune-on``) and read on the others:
tuning on the population scored is not a test.

    .venv/bin/python tools/conservative_study.py --first 12000 \\
        --model v7=runs/default_model/first-12000/model.pt \\
        --model ens3=runs/default_model/first-12000/model.pt+runs/ens/seed1/model.pt+runs/ens/seed2/model.pt \\
        --population smooth=data/smooth.zarr --population noneq=data/noneq.zarr \\
        --population check=../shared/external/check_v1.nc --scales 1.25 1.5 2 \\
        --adaptive 0.5 1 --npe --out docs/evaluation/trust/conservative_study.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _observe import observe_crisp  # tools/_observe.py
from torch import nn

from radynversion import load_model
from radynversion.atmosphere import VARIABLES
from radynversion.datasets import training_set
from radynversion.evaluate import cross_prior_scores, open_population
from radynversion.model import evaluation_split, sample_labels
from radynversion.model.posterior import posterior

warnings.filterwarnings("ignore")
Q = np.array([0.05, 0.16, 0.5, 0.84, 0.95])
H = 50


def to_quantiles(atm: np.ndarray) -> dict[str, np.ndarray]:
    """Draws ``(G, S, 150)`` of ``[log_ne, log_T, v']`` -> per variable ``(G, H, 5)`` quantiles."""
    out = {}
    for k, name in enumerate(VARIABLES):
        a = atm[:, :, k * H:(k + 1) * H].astype(np.float64)
        if name == "v":
            a = np.sign(a) * (10.0 ** np.abs(a) - 1.0)
        out[name] = np.moveaxis(np.quantile(a, Q, axis=1), 0, -1)  # (G, H, 5)
    return out


def inn_draws(nets, y, scale, samples, seed=0, block=32):
    """Draws ``(N, S, 150)`` from the mixture of ``nets`` (equal shares), latents times ``scale``
    (a number or one per pixel)."""
    n = y.shape[0]
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float32), (n,))
    per = [samples // len(nets) + (1 if i < samples % len(nets) else 0) for i in range(len(nets))]
    out = np.empty((n, samples, 3 * H), dtype=np.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for lo in range(0, n, block):
            yb = torch.as_tensor(y[lo:lo + block])
            sb = torch.as_tensor(np.ascontiguousarray(scale[lo:lo + block]))[:, None, None]
            col = 0
            for net, s in zip(nets, per, strict=True):
                z = torch.randn(yb.shape[0], s, net.n_z, generator=gen) * sb
                out[lo:lo + block, col:col + s] = net.sample_pixels(net.condition(yb), z).numpy()
                col += s
    return out


def disagreement(draws: np.ndarray, members: int, height_Mm: np.ndarray) -> np.ndarray:
    """Per pixel: how far the members' medians lie apart against their own widths, over the
    nodes at 0.5-2 Mm (mean over nodes and variables of ``var(medians) / mean(half-width^2)``,
    in the standardised ``[log_ne, log_T, v']``; the draws are in member blocks, as
    :func:`inn_draws` makes them)."""
    band = np.flatnonzero((height_Mm >= 0.5) & (height_Mm <= 2.0))
    cols = np.concatenate([band + k * H for k in range(3)])
    s = draws.shape[1]
    bounds = np.cumsum([0] + [s // members + (1 if i < s % members else 0) for i in range(members)])
    med, var = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        qs = np.quantile(draws[:, lo:hi][:, :, cols], [0.16, 0.5, 0.84], axis=1)
        med.append(qs[1])
        var.append(((qs[2] - qs[0]) / 2.0) ** 2 + 1e-8)
    return np.mean(np.var(np.stack(med), axis=0) / np.mean(np.stack(var), axis=0), axis=1)


class MDN(nn.Module):
    """Mixture of K full-covariance Gaussians over D coefficients, conditioned on profiles."""

    def __init__(self, n_y=60, d=24, k=8, hidden=256):
        super().__init__()
        self.d, self.k = d, k
        self.body = nn.Sequential(nn.Linear(n_y, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden), nn.SiLU())
        self.logits = nn.Linear(hidden, k)
        self.mean = nn.Linear(hidden, k * d)
        self.tril = nn.Linear(hidden, k * d * (d + 1) // 2)
        self.idx = torch.tril_indices(d, d)

    def params(self, y):
        h = self.body(y)
        b = y.shape[0]
        w = torch.log_softmax(self.logits(h), -1)
        mu = self.mean(h).view(b, self.k, self.d)
        t = self.tril(h).view(b, self.k, -1)
        L = torch.zeros(b, self.k, self.d, self.d, dtype=y.dtype)
        L[:, :, self.idx[0], self.idx[1]] = t
        diag = torch.nn.functional.softplus(torch.diagonal(L, dim1=-2, dim2=-1)) + 1e-3
        L = torch.tril(L, -1) + torch.diag_embed(diag)
        return w, mu, L

    def log_prob(self, c, y):
        w, mu, L = self.params(y)
        r = torch.linalg.solve_triangular(L, (c[:, None, :] - mu)[..., None], upper=False)[..., 0]
        logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        lp = -0.5 * (r**2).sum(-1) - logdet - 0.5 * self.d * float(np.log(2 * np.pi))
        return torch.logsumexp(w + lp, -1)

    @torch.no_grad()
    def sample(self, y, s, gen):
        w, mu, L = self.params(y)
        b = y.shape[0]
        comp = torch.multinomial(w.exp(), s, replacement=True, generator=gen)  # (b, s)
        eps = torch.randn(b, s, self.d, 1, generator=gen)
        Ls = torch.gather(L, 1, comp[:, :, None, None].expand(b, s, self.d, self.d))
        ms = torch.gather(mu, 1, comp[:, :, None].expand(b, s, self.d))
        return ms + (Ls @ eps)[..., 0]


class NPE:
    """The yardstick: PCA of the standardised atmosphere + an MDN over its coefficients."""

    def __init__(self, atm, y, groups, d=24, seed=0, epochs=100, patience=10):
        torch.manual_seed(seed)
        self.mu, self.sd = atm.mean(0), atm.std(0) + 1e-6
        x = (atm - self.mu) / self.sd
        _, _, vt = np.linalg.svd(x[:20000], full_matrices=False)
        self.v = vt[:d].T.astype(np.float32)
        c = x @ self.v
        self.res_sd = np.sqrt(np.mean((x - c @ self.v.T) ** 2, axis=0)).astype(np.float32)
        self.ymu, self.ysd = y.mean(0), y.std(0) + 1e-6
        yt = torch.as_tensor(((y - self.ymu) / self.ysd).astype(np.float32))
        ct = torch.as_tensor(c.astype(np.float32))
        rng = np.random.default_rng(seed)
        val_groups = rng.permutation(np.unique(groups))[: len(np.unique(groups)) // 10]
        is_val = np.isin(groups, val_groups)  # the noise copies of one atmosphere stay together
        val, tr = np.flatnonzero(is_val), np.flatnonzero(~is_val)
        self.net = MDN(y.shape[1], d)
        opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        best, best_state, bad = np.inf, None, 0
        for ep in range(epochs):
            self.epochs = ep + 1
            self.net.train()
            order = torch.as_tensor(rng.permutation(tr))
            for lo in range(0, len(order), 256):
                i = order[lo:lo + 256]
                loss = -self.net.log_prob(ct[i], yt[i]).mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
                opt.step()
            self.net.eval()
            with torch.no_grad():
                vl = float(-self.net.log_prob(ct[val], yt[val]).mean())
            if vl < best - 1e-3:
                best, bad = vl, 0
                best_state = {k: t.clone() for k, t in self.net.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
        self.net.load_state_dict(best_state)
        self.val_nll = best

    def draws(self, y, samples, seed=0, block=64):
        gen = torch.Generator().manual_seed(seed)
        out = np.empty((y.shape[0], samples, self.v.shape[0]), dtype=np.float32)
        yt = torch.as_tensor(((y - self.ymu) / self.ysd).astype(np.float32))
        for lo in range(0, len(yt), block):
            c = self.net.sample(yt[lo:lo + block], samples, gen).numpy()
            x = c @ self.v.T
            x += torch.randn(x.shape, generator=gen).numpy() * self.res_sd
            out[lo:lo + block] = x * self.sd + self.mu
        return out


def atmosphere_array(ds) -> np.ndarray:
    """``[log_ne, log_T, v']`` ``(N, 150)`` of a population."""
    v = np.asarray(ds["v"].values, dtype=np.float64)
    return np.concatenate([np.asarray(ds["log_ne"].values), np.asarray(ds["log_T"].values),
                           np.sign(v) * np.log10(np.abs(v) + 1.0)], axis=1).astype(np.float32)


def subset_scores(q, truth, keep, h):
    """:func:`brief` cross-prior scores of the pixels ``keep`` (None for 10 or fewer)."""
    if keep.sum() <= 10:
        return None
    return brief(cross_prior_scores({v: q[v][keep] for v in VARIABLES}, {v: truth[v][keep] for v in VARIABLES}, h))


def show(pname, label, sc, baseline=True):
    """One line: 68 / 90 % coverage and median error per parameter (and its baseline)."""
    print(f"{pname:15s} {label:22s} " + "  ".join(
        f"{v} {sc[v]['coverage68']:.2f}/{sc[v]['coverage90']:.2f} {sc[v]['median_abs_error']:.3g}"
        + (f"[{sc[v]['baseline_median_abs_error']:.3g}]" if baseline else "") for v in VARIABLES), flush=True)


def brief(sc):
    return {v: {k: round(float(sc[v][k]), 4) for k in ("coverage68", "coverage90", "median_abs_error",
                                                        "baseline_median_abs_error")} for v in VARIABLES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[],
                    help="NAME=PATH[+PATH...] ('default' = the packaged model)")
    ap.add_argument("--first", type=int, default=12000)
    ap.add_argument("--population", action="append", default=[], help="NAME=PATH")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--scales", type=float, nargs="*", default=[])
    ap.add_argument("--adaptive", type=float, nargs="*", default=[])
    ap.add_argument("--npe", action="store_true")
    ap.add_argument("--max-pixels", type=int, default=1200)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    models = {}
    for spec in a.model:
        name, paths = spec.split("=", 1)
        models[name] = [load_model(None if p == "default" else p).eval() for p in paths.split("+")]
    ref = next(iter(models.values()))[0]
    h = ref.height_Mm.cpu().numpy()

    data = training_set()
    data = data.isel(sample=np.flatnonzero(sample_labels(data) < a.first))
    held = evaluation_split(sample_labels(data))
    pops = {"prior_held_out": data.isel(sample=np.flatnonzero(held))}
    for spec in a.population:
        name, path = spec.split("=", 1)
        pops[name] = open_population(path)
    rng = np.random.default_rng(0)
    for name, ds in pops.items():
        if ds.sizes["sample"] > a.max_pixels:
            pops[name] = ds.isel(sample=np.sort(rng.choice(ds.sizes["sample"], a.max_pixels, replace=False)))

    def train_npe():
        t0 = time.perf_counter()
        train = data.isel(sample=np.flatnonzero(~held))
        atm = atmosphere_array(train)
        ys = [observe_crisp(train, ref, seed=100 + k) for k in range(4)]
        y = np.concatenate(ys)
        x = np.concatenate([atm] * 4)
        ok = np.isfinite(y).all(1) & np.isfinite(x).all(1)
        npe = NPE(x[ok], y[ok], np.tile(np.arange(len(atm)), 4)[ok])
        print(f"npe: {ok.sum()} pairs, {npe.epochs} epochs, val NLL {npe.val_nll:.2f}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        return npe

    report: dict = {"samples": a.samples, "first": a.first, "pixels": {}, "variants": {}}
    npe = None
    observed = {}
    # the INN variants first, for every population, then the yardstick (its training is the slow part)
    for pname, ds in [*pops.items(), *((p, None) for p in (pops if a.npe else {}))]:
        if ds is None:
            npe = npe or train_npe()
            y, truth = observed[pname]
            q = to_quantiles(npe.draws(y, a.samples))
            report["variants"][pname]["npe"] = {"all": brief(cross_prior_scores(q, truth, h))}
            show(pname, "npe", report["variants"][pname]["npe"]["all"])
            if a.out:
                with open(a.out, "w") as f:
                    json.dump(report, f, indent=1)
            continue
        y = observe_crisp(ds, ref)
        ok = np.isfinite(y).all(1)
        ds, y = ds.isel(sample=np.flatnonzero(ok)), y[ok]
        truth = {v: np.asarray(ds[v].values, dtype=float) for v in VARIABLES}
        observed[pname] = (y, truth)
        report["pixels"][pname] = int(y.shape[0])
        rows = {}
        for mname, nets in models.items():
            net0 = nets[0]
            res = posterior(net0, y, np.arange(y.shape[0]), samples=64, misfit=True, seed=0)
            trusted = net0.trust.scores(y, res.misfit) <= 1.0
            # the profiles' part of the score alone: known before any draw is made
            s = net0.trust.density(y) / net0.trust.density_scale
            variants = {"": 1.0} | {f"inflate-{t:g}": t for t in a.scales} | {
                f"adaptive-{b:g}": np.clip(s ** b, 1.0, 3.0) for b in a.adaptive}
            for vname, scale in variants.items():
                draws = inn_draws(nets, y, scale, a.samples)
                q = to_quantiles(draws)
                key = mname + (f" {vname}" if vname else "")
                if len(nets) > 1 and not vname:
                    d = disagreement(draws, len(nets), h)
                    if pname == "prior_held_out":
                        report.setdefault("disagreement_threshold", {})[mname] = float(np.quantile(d, 0.97))
                    keep = trusted & (d <= report["disagreement_threshold"][mname])
                    sc = subset_scores(q, truth, keep, h)
                    rows[key + " +agree"] = {"trusted": float(keep.mean()), "on_trusted": sc}
                    if sc:
                        show(pname, f"{key} trusted+agree {keep.mean():.2f}", sc, baseline=False)
                rows[key] = {"all": brief(cross_prior_scores(q, truth, h)), "trusted": float(trusted.mean()),
                             "on_trusted": subset_scores(q, truth, trusted, h)}
                show(pname, key, rows[key]["all"])
        report["variants"][pname] = rows
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            with open(a.out, "w") as f:
                json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
