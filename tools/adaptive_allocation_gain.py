"""How much adaptive draws per pixel could save on the quantile-map yardstick (issue 27).

A quantile's Monte Carlo error is proportional to the pixel's posterior width, so the best any
per-pixel allocation can do for the RMS error over pixels is to give each pixel draws in
proportion to its width. This script measures that bound on the pixels of
``benchmarks/maps_at_accuracy.py``: the 90 % widths of plain 1,024-draw posteriors, squared
and summed over heights per pixel and variable (``S``), and, for an allocation ``n`` (mean 1),
the budget ``(S / n).sum(0) / S.sum(0)`` that keeps each variable's error at equal draws'.
The speed-up is one over the largest of the three.

    PYTHONPATH=benchmarks .venv/bin/python tools/adaptive_allocation_gain.py [--per-kind 80]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from maps_at_accuracy import VARS, pick_pixels, quantile_maps

from radynversion.datasets import example_observation
from radynversion.model import load_model
from radynversion.model.invert import network_input


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=80, help="pixels of each kind of the example scan")
    ap.add_argument("--samples", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = load_model()
    y = network_input(example_observation(), net)[0]
    q = quantile_maps(net, y[pick_pixels(args.per_kind)], args.samples, "plain", 0, "fp32")  # (N, Q, 3, H)
    width = q[:, -1] - q[:, 0]  # the outermost quantiles (5 and 95 %)
    S = (width**2).sum(-1)  # (N, 3)
    Sn = S / S.sum(0)
    for name, n in (("equal", np.ones(len(S))), ("by mean width", np.sqrt(Sn.mean(1))),
                    ("by largest width", np.sqrt(Sn.max(1)))):
        n = n / n.mean()
        budget = (S / n[:, None]).sum(0) / S.sum(0)
        print(f"{name}: budget {dict(zip(VARS, budget.round(3).tolist(), strict=True))}, speed-up {1 / budget.max():.3f}")
    lo, mid, hi = np.percentile(np.sqrt(S), [5, 50, 95], axis=0)
    for k, v in enumerate(VARS):
        print(f"{v}: 90 % widths summed in quadrature over heights, 5/50/95th percentile over pixels "
              f"{lo[k]:.3g} / {mid[k]:.3g} / {hi[k]:.3g}")


if __name__ == "__main__":
    main()
