"""The splits of a trained model, for the yardstick tools in this folder (run as scripts)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from radynversion.datasets import training_set
from radynversion.model import PosteriorModel, load_model
from radynversion.model.evaluate import _select
from radynversion.model.train import sample_labels


def model_splits(model: str | None, first: int | None
                 ) -> tuple[PosteriorModel, xr.Dataset, dict[str, np.ndarray], np.ndarray]:
    """A model, the training set it saw, and its splits as positions in that set.

    Parameters
    ----------
    model : path or None
        Checkpoint (None = the packaged default).
    first : int or None
        Use the first N draws of the packaged training set (as ``radynversion train --first``).

    Returns
    -------
    net, data, splits, prior
        ``splits``: ``"train"`` and ``"validation"`` from the checkpoint's provenance and
        ``"held out"``, the split ``radynversion evaluate`` scores; ``prior``: the positions of
        evaluate's prior-only baseline.
    """
    net = load_model(model)
    data = training_set()
    if first:
        data = data.isel(sample=np.flatnonzero(np.asarray(data["sample"].values) < first))
    prov = net.metadata["provenance"]
    pos = {int(lab): i for i, lab in enumerate(sample_labels(data))}
    held, prior = _select(data, net, False, None, "training set")
    splits = {"train": np.array([pos[i] for i in prov["train_samples"] if i in pos]),
              "validation": np.array([pos[i] for i in prov["val_samples"] if i in pos]),
              "held out": held}
    return net, data, splits, prior
