"""The splits of a trained model, for the yardstick tools in this folder (run as scripts)."""

from __future__ import annotations

import argparse

import numpy as np
import xarray as xr

from radynversion.datasets import sample_labels, training_set
from radynversion.evaluate import evaluation_rows
from radynversion.model import PosteriorModel, load_model


def add_split_arguments(ap: argparse.ArgumentParser) -> None:
    """The command-line options of :func:`model_splits` (``--model``, ``--first``, and the
    learning-curve options ``--train-fraction`` and ``--train-until``)."""
    ap.add_argument("--model", default=None, help="checkpoint whose splits to use (default: packaged)")
    ap.add_argument("--first", type=int, default=None, help="the first N draws of the training set")
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="train on this random fraction of the training split (learning curves)")
    ap.add_argument("--train-until", type=int, default=None,
                    help="also train on the draws from --first up to this label that are not held "
                         "out (learning curves on a grown set; held-out split and prior unchanged)")


def model_splits(model: str | None, first: int | None, train_fraction: float = 1.0,
                 train_until: int | None = None, seed: int = 0
                 ) -> tuple[PosteriorModel, xr.Dataset, dict[str, np.ndarray], np.ndarray]:
    """A model, the training set it saw, and its splits as positions in that set.

    Parameters
    ----------
    model : path or None
        Checkpoint (None = the packaged default).
    first : int or None
        Use the first N draws of the packaged training set (as ``radynversion train --first``).
    train_fraction : float
        Keep this random fraction of the training split (``seed``); the validation and held-out
        splits are unchanged, so errors at several fractions form a learning curve.
    train_until : int or None
        Add to the training split every usable draw with a label in ``[first, train_until)``
        outside the held-out split (the label hash of ``evaluation_split``), as a model trained
        on the grown set would see them. The held-out split and the prior stay those of the
        first ``first`` draws.

    Returns
    -------
    net, data, splits, prior
        ``splits``: ``"train"`` and ``"validation"`` from the checkpoint's provenance and
        ``"held out"``, the split ``radynversion evaluate`` scores; ``prior``: the positions of
        evaluate's prior-only baseline.
    """
    if not 0.0 < train_fraction <= 1.0:
        raise SystemExit(f"--train-fraction {train_fraction}: expected a fraction in (0, 1]")
    if train_until is not None and (first is None or train_until <= first):
        raise SystemExit(f"--train-until {train_until}: expected a label above --first ({first})")
    net = load_model(model)
    data = training_set()
    labels_all = np.asarray(data["sample"].values)
    last = train_until if train_until is not None else first
    if last:
        data = data.isel(sample=np.flatnonzero(labels_all < last))
    labels = sample_labels(data)
    pos = {int(lab): i for i, lab in enumerate(labels)}
    # the split is a hash of each label: one selection over all the draws, cut at `first`
    held, prior = evaluation_rows(data, net, False, None, "training set")
    if first:
        held, kept, prior = held[labels[held] < first], prior[labels[prior] >= first], prior[labels[prior] < first]
    prov = net.metadata["provenance"]
    train = np.array([pos[i] for i in prov["train_samples"] if i in pos and (not first or i < first)])
    if train_until is not None:
        train = np.concatenate([train, kept])  # usable, not held out, from `first` on
    if train_fraction < 1.0:
        keep = np.random.default_rng(seed).choice(train.size, round(train_fraction * train.size), replace=False)
        train = train[np.sort(keep)]
    splits = {"train": train,
              "validation": np.array([pos[i] for i in prov["val_samples"] if i in pos]),
              "held out": held}
    return net, data, splits, prior
