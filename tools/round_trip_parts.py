"""Where does the round trip come from? The emulator against the observation, on three inputs.

For the held-out split (first N draws, CRISP's default program, transmission, 1 % noise), the
median over atmospheres of the RMS of emulator(atmosphere) - observed profiles (both lines, %
of the joint peak), with the atmosphere being

* ``truth``: the true atmosphere (the emulator's own error plus the noise and interpolation);
* ``median atmosphere``: the per-node median of the pixel's posterior draws;
* ``draws``: each of 64 posterior draws (the mean over draws: ``invert``'s ``misfit``);
* ``smoothed draws``: the draws smoothed along height by a [1/4, 1/2, 1/4] kernel.

    .venv/bin/python tools/round_trip_parts.py --first 12000 [--model M]

About a minute per model on one CPU thread.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _splits import model_splits  # tools/_splits.py

from radynversion.instrument import crisp_tunings, degrade
from radynversion.lines import LINES
from radynversion.model import atmosphere_to_array, normalise_profiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: packaged)")
    ap.add_argument("--first", type=int, default=None, help="the first N draws of the training set")
    ap.add_argument("--draws", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net, data, splits, _ = model_splits(args.model, args.first)
    net.eval()
    sub = data.isel(sample=splits["held out"])
    fwhm, unit = net.instrument_fwhm_A(), net.config.intensity_unit
    obs = degrade(sub[[ln.var for ln in LINES]], {ln.key: crisp_tunings(ln) for ln in LINES}, fwhm_A=fwhm,
                  noise=0.01, seed=0)
    y_obs = torch.as_tensor(normalise_profiles(obs, unit=unit, fwhm_A=fwhm)[0])
    truth = torch.as_tensor(atmosphere_to_array(sub))
    gen = torch.Generator().manual_seed(0)
    kernel = torch.tensor([[[0.25, 0.5, 0.25]]])
    h = truth.shape[1] // 3
    parts: dict[str, list[np.ndarray]] = {"truth": [], "median atmosphere": [], "draws": [], "smoothed draws": []}
    with torch.no_grad():
        for a in range(0, len(sub["sample"]), 100):
            yo = y_obs[a : a + 100]
            n = len(yo)
            atm = net.sample(net.condition(yo).repeat_interleave(args.draws, 0),
                             torch.randn(n * args.draws, net.n_z, generator=gen)).reshape(n * args.draws, -1)
            x = net.atmosphere_to_x(atm).reshape(-1, 1, h)
            smooth = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (1, 1), mode="replicate"), kernel)
            inputs = {"truth": truth[a : a + 100],
                      "median atmosphere": atm.reshape(n, args.draws, -1).median(1).values,
                      "draws": atm, "smoothed draws": net.x_to_atmosphere(smooth.reshape(n * args.draws, -1))}
            for name, atmospheres in inputs.items():
                d = net.emulate(atmospheres).reshape(n, -1, yo.shape[1]) - yo[:, None]
                parts[name].append((100 * d.pow(2).mean(-1).sqrt().mean(1)).numpy())
    print(f"{args.model or 'packaged model'}: {len(sub['sample'])} held-out atmospheres, CRISP's program, 1 % "
          "noise; median RMS of emulator(input) - observed, both lines, % of the peak:")
    for name, values in parts.items():
        print(f"  {name:18s} {np.median(np.concatenate(values)):.2f}")


if __name__ == "__main__":
    main()
