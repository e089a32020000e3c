"""Ways of drawing latents that the engine does not use, against plain and Sobol (issue 27).

For a few pixels of each kind of the example scan, the RMS error of the quantile maps against
a plain reference, relative to plain 1,024 draws (worst and mean over the 15 variable x quantile
errors), for: plain, antithetic pairs, Sobol with a random digital shift (the engine's),
Owen-type (linear matrix) scrambled Sobol, Sobol with antithetic pairs, Sobol along the model's
principal latent directions (eigenvectors of the mean ``J^T J`` of the reverse pass at a few
pixels), and the Harrell-Davis quantile estimator on plain and Sobol draws. fp32 throughout.

    .venv/bin/python tools/latent_sampling_study.py --per-kind 16 --reference 8192
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import beta

from radynversion import load_model
from radynversion.atmosphere import inverse_velocity_transform
from radynversion.datasets import example_observation, example_truth
from radynversion.model.invert import network_input
from radynversion.model.posterior import pixel_latents, pixel_seeds

Q = np.array([0.05, 0.16, 0.5, 0.84, 0.95])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", dest="per_kind", type=int, default=16)
    ap.add_argument("--reference", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(2)
    net = load_model()
    kind = example_truth().kind.values.ravel()
    rng = np.random.default_rng(0)
    pix = np.concatenate([rng.choice(np.flatnonzero(kind == k), a.per_kind, replace=False) for k in np.unique(kind)])
    obs = example_observation().isel(time=0).stack(pixel=("y", "x")).transpose("pixel", ...)
    y, _ = network_input(obs.isel(pixel=pix), net)
    nz = net.n_z
    with torch.no_grad():
        ctx = net.condition(torch.as_tensor(y))

    def draws(i: int, z: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for k in range(0, z.shape[0], 4096):
                zz = torch.as_tensor(z[None, k : k + 4096], dtype=torch.float32)
                out.append(net.sample_pixels(ctx[i : i + 1], zz)[0].numpy())
        s = np.concatenate(out).astype(np.float64)
        s[:, 100:] = inverse_velocity_transform(s[:, 100:])
        return s

    def hd(s: np.ndarray) -> np.ndarray:
        n = s.shape[0]
        srt = np.sort(s, axis=0)
        grid = np.arange(n + 1) / n
        return np.stack([np.diff(beta.cdf(grid, (n + 1) * p, (n + 1) * (1 - p))) @ srt for p in Q])

    # principal latent directions: eigenvectors of the mean J^T J at z = 0 and 3 random z per pixel
    jtj = torch.zeros(nz, nz, dtype=torch.float64)
    for i in range(0, len(pix), 4):
        for k in range(4):
            z0 = torch.randn(nz) * (k > 0)
            jac = torch.autograd.functional.jacobian(
                lambda z, i=i: net.sample_pixels(ctx[i : i + 1], z[None, None])[0, 0] / net.x_std, z0)
            jtj += jac.double().T @ jac.double()
    _, vecs = torch.linalg.eigh(jtj)
    rot = vecs.flip(1).float().numpy()

    def latents(method: str, n: int, i: int, rep: int) -> np.ndarray:
        seed = int(pixel_seeds(rep, np.array([int(pix[i])]))[0])
        r = np.random.default_rng([rep, i])
        if method in ("plain", "plain+hd"):
            return r.standard_normal((n, nz))
        if method == "antithetic":
            h = r.standard_normal((n // 2, nz))
            return np.concatenate([h, -h])
        if method in ("sobol", "sobol+hd"):
            return pixel_latents("sobol", seed, n, nz).numpy()
        if method == "sobol-owen":
            u = torch.quasirandom.SobolEngine(nz, scramble=True, seed=seed % 2**62).draw(n, dtype=torch.float64)
            return torch.special.ndtri(u.clamp(1e-12, 1 - 1e-12)).numpy()
        if method == "sobol+antithetic":
            h = pixel_latents("sobol", seed, n // 2, nz).numpy()
            return np.concatenate([h, -h])
        if method == "sobol-principal":
            return pixel_latents("sobol", seed, n, nz).numpy() @ rot.T
        raise ValueError(method)

    ref = np.stack([np.quantile(draws(i, np.random.default_rng(10**6 + i).standard_normal((a.reference, nz))), Q,
                                axis=0) for i in range(len(pix))], 1)

    def error(method: str, n: int) -> np.ndarray:
        errs = []
        for rep in range(a.repeats):
            est = []
            for i in range(len(pix)):
                s = draws(i, latents(method, n, i, rep))
                est.append(hd(s) if method.endswith("+hd") else np.quantile(s, Q, axis=0))
            d = np.stack(est, 1) - ref
            errs.append((d.reshape(len(Q), -1, 3, 50) ** 2).mean(axis=(1, 3)))
        return np.sqrt(np.mean(errs, axis=0))

    bar = error("plain", 1024)
    for method in ("plain", "antithetic", "plain+hd", "sobol", "sobol-owen", "sobol+antithetic", "sobol-principal",
                   "sobol+hd"):
        for n in (256, 512, 1024):
            if (method, n) == ("plain", 1024):
                continue
            r = error(method, n) / bar
            print(f"{method:17s} {n:5d}: worst {r.max():.3f} mean {r.mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
