"""Fit the per-pixel trust reference of a trained model and write the model with it.

Models trained by ``radynversion train`` since the trust flag existed carry a reference already;
this gives one to a model trained before (the packaged ones): the density model of its training
observations and the thresholds that trust 97 % of draws it was not trained on
(:func:`radynversion.model.trust.build_trust_reference`). The weights are untouched.

    .venv/bin/python tools/add_trust_reference.py radynversion/data/default_model.pt --first 12000
    .venv/bin/python tools/add_trust_reference.py radynversion/data/default_model_per_line.pt --first 12000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from radynversion.datasets import training_set
from radynversion.model import evaluation_split, load_model, read_checkpoint, sample_labels, usable_samples
from radynversion.model.checkpoint import compact_checkpoint
from radynversion.model.trust import build_trust_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data", default=None, help="training set (default: the project's prior store)")
    ap.add_argument("--first", type=int, default=12000, help="draws the model was trained on (labels below)")
    ap.add_argument("--out", type=Path, default=None, help="default: replace the model file")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    net = load_model(a.model)
    data = training_set(a.data)
    data = data.isel(sample=usable_samples(data))
    labels = sample_labels(data)
    data = data.isel(sample=np.flatnonzero(labels < a.first))
    held = evaluation_split(sample_labels(data))
    ref = build_trust_reference(net, data.isel(sample=np.flatnonzero(~held)), data.isel(sample=np.flatnonzero(held)),
                                source=f"first {a.first} draws of the training set")
    print(ref.description)
    print(f"density scale {ref.density_scale:.3f}, misfit scale {ref.misfit_scale:.4f}")
    ckpt = read_checkpoint(a.model)
    ckpt["trust"] = ref.to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "with_trust.pt"
        torch.save(ckpt, raw)
        out = a.out or a.model
        if ckpt.get("weights_dtype") == "float16":  # keep a shipped file compact
            compact_checkpoint(raw, out)
        else:
            torch.save(ckpt, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
