"""Shipped models in half precision: half the bytes, the same inversions within rounding."""

import numpy as np
import torch
from synthetic import scan, tiny_cinn

from radynversion.model import load_model, save_checkpoint
from radynversion.model.checkpoint import compact_checkpoint, read_checkpoint
from radynversion.model.invert import invert


def test_compact_checkpoint_halves_the_weights_and_keeps_the_results(tmp_path):
    net = tiny_cinn()
    full = save_checkpoint(tmp_path / "full.pt", net, training={"epoch": 3})
    half = compact_checkpoint(full, tmp_path / "half.pt")
    ck = read_checkpoint(half)
    assert ck["weights_dtype"] == "float16" and "training" not in ck
    assert ck["state_dict"]["x_mean"].dtype == torch.float32  # the standardisation stays exact
    assert any(v.dtype == torch.float16 for v in ck["state_dict"].values())
    assert half.stat().st_size < 0.7 * full.stat().st_size
    a, b = load_model(full), load_model(half)
    assert all(p.dtype == torch.float32 for p in b.parameters() if p.is_floating_point())
    ds = scan(2, 3)
    ra, rb = invert(ds, a, samples=64, precision="fp32"), invert(ds, b, samples=64, precision="fp32")
    for v in ("log_ne", "log_T", "v"):
        width = float((ra[v].sel(quantile=0.84) - ra[v].sel(quantile=0.16)).median())
        diff = np.abs(ra[v].values - rb[v].values)
        assert float(np.median(diff)) < 0.01 * width and float(diff.max()) < 0.25 * width
