"""Which forward emulator generalises best from this training set? Emulators alone, compared.

Trains one emulator (the dense layout of the v2-v7 emulators, or the convolutional
:class:`HeightConvEmulator` below with ``--conv-channels``) by L2 on the
standardised profiles, on the model's own training split (from the checkpoint's provenance),
keeps the epoch of the lowest validation error, and prints the median RMS error per line (% of
the joint peak) on the training, validation and held-out splits, as ``radynversion evaluate``
scores the emulator (``forward_rms``: emulator(true atmosphere) against the noise-free profiles
at the model points). Without the flow, a recipe is tried in a few minutes instead of a full
training run.

    .venv/bin/python tools/emulator_study.py --first 12000 --layers 3                  # v7's
    .venv/bin/python tools/emulator_study.py --first 12000 --conv-channels 96 --conv-layers 4
    .venv/bin/python tools/emulator_study.py --first 12000 --layers 3 --doppler-copies 3 --doppler-kms 10 --epochs 120

``--doppler-copies`` adds copies of the training split moved as a whole along the line of sight,
with their profiles Doppler-shifted (``tools/_doppler.py``): exact new examples of the forward
map, since such a move changes nothing in the atmosphere's own frame. ``--train-fraction`` and
``--train-until`` train on less or more than the model's split (``tools/learning_curve.py``).

AdamW with a one-cycle learning rate (not ``train``'s schedule), batch 128, one CPU thread:
about 1 s per epoch dense, 4-6 s with convolutions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _doppler import add_doppler_arguments, doppler_copies  # tools/_doppler.py
from _splits import add_split_arguments, model_splits  # tools/_splits.py
from torch import Tensor, nn

from radynversion.model import atmosphere_to_array, normalise_profiles
from radynversion.model.cinn import dropout_mlp


class HeightConvEmulator(nn.Module):
    """Forward emulator that convolves the atmosphere along height before its dense layers.

    ``x`` ``(N, 3 H)`` (``[log_ne, log_T, v']`` standardised, each on the ``H`` nodes) is read as
    3 channels over ``H`` heights. ``conv_layers`` 1D convolutions (``kernel`` nodes wide, zero
    padded to keep ``H``, leaky ReLU; the last one to ``channels // 2`` features) share their
    filters across heights, so a structure (a transition region, a condensation) is learnt once
    for every height it may sit at. The features at all heights, next to ``x`` itself, feed
    fully connected layers (:func:`dropout_mlp`) that integrate along the line of sight.

    Parameters
    ----------
    n_heights : int
        ``H``, nodes per variable.
    n_out : int
        Profile points (60).
    channels, conv_layers, kernel : int
        Convolution width, depth and kernel size (odd, in nodes).
    hidden, layers : int
        Hidden width and number of hidden layers of the dense part.
    slope : float
        Negative slope of the leaky ReLUs.
    dropout : float
        Dropout of the dense part (training mode only).

    Example
    -------
    >>> import torch
    >>> emu = HeightConvEmulator(50, 60, channels=8, conv_layers=2, kernel=3, hidden=16, layers=2,
    ...                          slope=0.1, dropout=0.0)
    >>> emu(torch.zeros(4, 150)).shape
    torch.Size([4, 60])
    """

    def __init__(self, n_heights: int, n_out: int, channels: int, conv_layers: int, kernel: int,
                 hidden: int, layers: int, slope: float, dropout: float) -> None:
        super().__init__()
        self.n_heights = n_heights
        features = max(1, channels // 2)
        widths = [3] + [channels] * (conv_layers - 1) + [features]
        convs: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            convs += [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.LeakyReLU(slope)]
        self.conv = nn.Sequential(*convs)
        self.dense = dropout_mlp((features + 3) * n_heights, n_out, hidden, layers, slope, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(N, 3 H)`` -> standardised profiles ``(N, n_out)``."""
        h = self.conv(x.reshape(-1, 3, self.n_heights)).flatten(1)
        return self.dense(torch.cat([h, x], dim=1))


def parser() -> argparse.ArgumentParser:
    """The command line (also used by ``tools/learning_curve.py``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_split_arguments(ap)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--hidden", type=int, default=512, help="width of the dense layers")
    ap.add_argument("--layers", type=int, default=2, help="hidden dense layers")
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--conv-channels", type=int, default=0, help="0 = dense only (v2-v7)")
    ap.add_argument("--conv-layers", type=int, default=4)
    ap.add_argument("--kernel", type=int, default=5, help="convolution width [nodes]")
    ap.add_argument("--lr", type=float, default=1e-3)
    add_doppler_arguments(ap)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def fit(args: argparse.Namespace) -> dict:
    """Train one emulator and score it; prints the scores and returns them.

    Returns
    -------
    dict
        ``n_train``; ``rms_pct``: per split, the median RMS of H-alpha and of Ca II 8542 (% of
        the joint peak); ``seconds``.
    """
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    net, data, splits, _ = model_splits(args.model, args.first, args.train_fraction, args.train_until,
                                        args.seed)
    y = torch.as_tensor(normalise_profiles(data, unit=net.config.intensity_unit,
                                           fwhm_A=net.instrument_fwhm_A())[0])
    with torch.no_grad():
        x = net.atmosphere_to_x(torch.as_tensor(atmosphere_to_array(data)))
    tr = torch.as_tensor(splits["train"])
    if args.doppler_copies:  # appended rows, trained on like the split's own
        for c in doppler_copies(data.isel(sample=splits["train"]), args.doppler_copies, args.doppler_kms,
                                args.seed):
            y_c = torch.as_tensor(normalise_profiles(c, unit=net.config.intensity_unit,
                                                     fwhm_A=net.instrument_fwhm_A())[0])
            with torch.no_grad():
                x_c = net.atmosphere_to_x(torch.as_tensor(atmosphere_to_array(c)))
            tr = torch.cat([tr, torch.arange(len(y), len(y) + len(y_c))])
            y, x = torch.cat([y, y_c]), torch.cat([x, x_c])
    y_mean, y_std = y[tr].mean(0), y[tr].std(0) + 1e-6
    n_y, slope = y.shape[1], net.config.leaky_slope
    if args.conv_channels:
        model = HeightConvEmulator(x.shape[1] // 3, n_y, args.conv_channels, args.conv_layers, args.kernel,
                                   args.hidden, args.layers, slope, args.dropout)
    else:
        model = dropout_mlp(x.shape[1], n_y, args.hidden, args.layers, slope, args.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(tr) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.05)
    target = (y[tr] - y_mean) / y_std

    def rms_pct(idx: np.ndarray) -> np.ndarray:
        """Median RMS per line over the atmospheres ``idx``, % of the joint peak."""
        model.eval()
        with torch.no_grad():
            d = (model(x[idx]) * y_std + y_mean - y[idx]).numpy()
        model.train()
        half = n_y // 2
        return np.array([np.median(100 * np.sqrt(np.mean(d[:, s : s + half] ** 2, axis=1))) for s in (0, half)])

    best = (np.inf, -1, None)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        for batch in torch.randperm(len(tr)).split(128)[: len(tr) // 128]:  # positions in the split
            loss = ((model(x[tr[batch]]) - target[batch]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = rms_pct(splits["validation"]).sum()
        if val < best[0]:
            best = (val, epoch, {k: t.clone() for k, t in model.state_dict().items()})
    model.load_state_dict(best[2])
    n_par = sum(p.numel() for p in model.parameters())
    kind = (f"{args.conv_layers} convolutions of {args.conv_channels} x {args.kernel} nodes, then "
            if args.conv_channels else "")
    print(f"emulator: {kind}{args.layers} dense layers of {args.hidden}, dropout {args.dropout} "
          f"({n_par:,} parameters); best validation epoch {best[1] + 1} of {args.epochs} "
          f"({time.perf_counter() - t0:.0f} s). Median RMS, H-alpha / Ca II 8542, % of the peak:")
    scores = {}
    for name, idx in splits.items():
        h, c = rms_pct(idx)
        scores[name] = [float(h), float(c)]
        print(f"  {name:10s} ({len(idx):5d}) {h:.2f} / {c:.2f}")
    return {"n_train": len(splits["train"]), "rms_pct": scores, "seconds": time.perf_counter() - t0}


def main() -> None:
    fit(parser().parse_args())


if __name__ == "__main__":
    main()
