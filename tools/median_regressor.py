"""How good can a point estimate be on this training set? A direct regressor as a yardstick.

Trains a multilayer perceptron from the normalised profiles straight to the atmosphere
(``log_ne``, ``log_T``, ``v'`` on the 50 nodes, standardised) with an L1 loss, whose optimum is
the conditional median: the same point estimate as the posterior median that ``radynversion
evaluate`` scores. It uses the model's own training and validation samples (from the
checkpoint's provenance), keeps the epoch of the lowest validation L1, and scores the held-out
split as ``evaluate`` does (CRISP's default tunings, transmission, 1 % noise; chromosphere =
0.5 Mm up to the first node with log T >= 4.5): median absolute error over the prior's.

If the regressor is no better than the posterior median, the network is not what limits the
point estimate: the data are.

    .venv/bin/python tools/median_regressor.py --first 12000                    # model points
    .venv/bin/python tools/median_regressor.py --first 12000 --tuning-programs 8
    .venv/bin/python tools/median_regressor.py --first 12000 --variables v --doppler-copies 3 --doppler-kms 10 --epochs 20

``--doppler-copies`` adds Doppler-shifted copies of the training split (``tools/_doppler.py``).
Unlike the emulator's, the regressor's copies change its prior: every shifted atmosphere moves
its photosphere too, and the velocities spread wider than the training set's.

About 25 s for 60 epochs on one CPU thread (v alone, 9,262 atmospheres; Intel Xeon).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import xarray as xr
from _doppler import add_doppler_arguments, doppler_copies  # tools/_doppler.py
from _splits import add_split_arguments, model_splits  # tools/_splits.py
from torch import nn

from radynversion.atmosphere import inverse_velocity_transform
from radynversion.evaluate import height_bands
from radynversion.instrument import crisp_tunings, degrade
from radynversion.lines import LINES
from radynversion.model import normalise_profiles
from radynversion.model.preprocess import atmosphere_to_array
from radynversion.model.sampling import ObservedSampling


def parser() -> argparse.ArgumentParser:
    """The command line (also used by ``tools/learning_curve.py``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_arguments(ap)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--tuning-programs", type=int, default=0,
                    help="train on profiles seen through tuning programs (TrainConfig.tuning_programs)")
    ap.add_argument("--variables", nargs="+", default=["log_ne", "log_T", "v"],
                    choices=["log_ne", "log_T", "v"], help="what the regressor estimates")
    add_doppler_arguments(ap, " (model points only)")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def fit(args: argparse.Namespace) -> dict:
    """Train one regressor and score it; prints the scores and returns them.

    Returns
    -------
    dict
        ``n_train``; ``ratio``: chromospheric median absolute error over the prior's, per
        variable estimated; ``seconds``.
    """
    torch.manual_seed(args.seed)
    net, data, splits, prior_pos = model_splits(  # evaluate's splits and prior
        args.model, args.first, args.train_fraction, args.train_until, args.seed)
    tr, va, held = splits["train"], splits["validation"], splits["held out"]
    fwhm, unit = net.instrument_fwhm_A(), net.config.intensity_unit

    def profiles(idx: np.ndarray):
        return data.isel(sample=idx)[[ln.var for ln in LINES]]

    def observed(idx: np.ndarray, seed: int) -> torch.Tensor:
        obs = degrade(profiles(idx), {ln.key: crisp_tunings(ln) for ln in LINES}, fwhm_A=fwhm,
                      noise=0.01, seed=seed)
        return torch.as_tensor(normalise_profiles(obs, unit=unit, fwhm_A=fwhm)[0])

    y_tr = normalise_profiles(profiles(tr), unit=unit, fwhm_A=fwhm)[0]
    atm_tr = data.isel(sample=tr)[["log_ne", "log_T", "v"]]
    if args.doppler_copies:
        if args.tuning_programs:
            raise SystemExit("--doppler-copies: at the model points only (no --tuning-programs)")
        copies = doppler_copies(data.isel(sample=tr)[[*(ln.var for ln in LINES), "log_ne", "log_T", "v"]],
                                args.doppler_copies, args.doppler_kms, args.seed)
        y_tr = np.concatenate([y_tr, *(normalise_profiles(c, unit=unit, fwhm_A=fwhm)[0] for c in copies)])
        atm_tr = xr.concat([atm_tr, *(c[["log_ne", "log_T", "v"]] for c in copies)], dim="sample")
    sampling = (ObservedSampling(data.isel(sample=tr), y_tr, args.tuning_programs, fwhm, unit)
                if args.tuning_programs else None)
    y_tr_t = torch.as_tensor(y_tr)
    h = data.sizes["height"]
    cols = np.concatenate([np.arange(h) + h * ["log_ne", "log_T", "v"].index(v) for v in args.variables])
    x_tr = atmosphere_to_array(atm_tr)[:, cols]
    x_mean, x_std = x_tr.mean(0), x_tr.std(0) + 1e-6
    target = torch.as_tensor(((x_tr - x_mean) / x_std).astype(np.float32))
    y_va, y_te = observed(va, 1), observed(held, 0)
    x_va = atmosphere_to_array(data.isel(sample=va))[:, cols]
    truth = {v: np.asarray(data[v].isel(sample=held).transpose("sample", "height").values, float)
             for v in ("log_ne", "log_T", "v")}
    log_T_truth = truth["log_T"]
    truth = {v: truth[v] for v in args.variables}
    chrom = height_bands(log_T_truth, np.asarray(data["height"].values, float)) == 1
    prior = {v: np.median(np.asarray(data[v].isel(sample=prior_pos).transpose("sample", "height").values,
                                     float), axis=0) for v in truth}
    prior_err = {v: np.median(np.abs(prior[v][None] - truth[v])[chrom]) for v in truth}

    def noisy(rows: torch.Tensor) -> torch.Tensor:
        if sampling is not None:
            return sampling.observe(rows, 0.01, True)
        y = y_tr_t[rows] + 0.01 * torch.randn(len(rows), y_tr_t.shape[1])
        return y / y.amax(1, keepdim=True)

    y_mean, y_std = y_tr_t.mean(0), y_tr_t.std(0) + 1e-6
    w = args.width
    model = nn.Sequential(nn.Linear(60, w), nn.LeakyReLU(0.01), nn.Linear(w, w), nn.LeakyReLU(0.01),
                          nn.Linear(w, w), nn.LeakyReLU(0.01), nn.Linear(w, target.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)

    def predict(y: torch.Tensor) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return model((y - y_mean) / y_std).numpy() * x_std + x_mean

    best = (np.inf, -1, None)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for rows in torch.randperm(len(target)).split(128):
            loss = (model((noisy(rows) - y_mean) / y_std) - target[rows]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        val = float(np.abs((predict(y_va) - x_va) / x_std).mean())
        if val < best[0]:
            best = (val, epoch, {k: t.clone() for k, t in model.state_dict().items()})
    model.load_state_dict(best[2])
    p = predict(y_te)
    est = {v: p[:, k * h : (k + 1) * h] for k, v in enumerate(args.variables)}
    if "v" in est:
        est["v"] = inverse_velocity_transform(est["v"])
    sampled = f"{args.tuning_programs} tuning programs" if sampling is not None else "model points"
    print(f"median regressor ({sampled}), {len(tr)} training atmospheres, best validation epoch "
          f"{best[1] + 1} of {args.epochs} ({time.perf_counter() - t0:.0f} s); {len(held)} held out, CRISP "
          "tunings, 1 % noise; chromosphere, median abs error / prior's:")
    ratio = {}
    for v in truth:
        err = np.median(np.abs(est[v] - truth[v])[chrom])
        ratio[v] = float(err / prior_err[v])
        print(f"  {v:7s} {err:.4g} / {prior_err[v]:.4g} = {ratio[v]:.3f}")
    return {"n_train": len(tr), "ratio": ratio, "seconds": time.perf_counter() - t0}


def main() -> None:
    fit(parser().parse_args())


if __name__ == "__main__":
    main()
