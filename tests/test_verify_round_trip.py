"""The verify report's INN round trip (`y_round_trip`): the emulator on the checked atmospheres."""

from __future__ import annotations

import numpy as np
from synthetic import training_set

from radynversion.evaluate import round_trip_profiles
from radynversion.model.checkpoint import file_sha256
from radynversion.verify import round_trip_of


def _atmospheres(n: int = 3) -> np.ndarray:
    ds = training_set(n)
    return np.stack([ds[v].values for v in ("log_ne", "log_T", "v")], axis=1).astype(float)  # (n, 3, H)


def test_round_trip_uses_the_given_model_or_the_checkpoint_the_result_names(net, model_path):
    import xarray as xr

    atm = _atmospheres()
    expected = round_trip_profiles(net, atm)
    assert expected.shape == (3, 60) and np.isfinite(expected).all()
    in_memory = xr.Dataset(attrs={"model": "<in memory>"})
    assert np.isnan(round_trip_of(in_memory, atm)).all() and round_trip_of(in_memory, atm).shape == (3, 60)
    np.testing.assert_allclose(round_trip_of(in_memory, atm, model=net), expected, rtol=1e-6)
    stored = xr.Dataset(attrs={"model": str(model_path), "model_sha256": file_sha256(model_path)})
    np.testing.assert_allclose(round_trip_of(stored, atm), expected, rtol=1e-5, atol=1e-7)
    changed = stored.assign_attrs(model_sha256="0" * 64)  # the file is no longer the model used
    assert np.isnan(round_trip_of(changed, atm)).all()
    assert round_trip_of(stored, atm[:0]).shape == (0, 60)
