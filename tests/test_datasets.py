"""The default training set shipped in the package: size, schema and provenance."""

from __future__ import annotations

import tomllib

import astropy.units as u
import numpy as np
import pytest
import zarr

from radynversion.atmosphere import default_height_grid
from radynversion.datasets import training_set, training_set_path
from radynversion.lines import CA8542, HALPHA
from radynversion.schema import validate_profiles, wavelengths_air_A


@pytest.fixture(scope="module")
def shipped():
    return training_set()


def test_shipped_set_holds_the_first_12000_draws_and_only_finished_shards(shipped):
    store = zarr.open_group(str(training_set_path()), mode="r")
    done = store["shard_done"][:] == 1
    assert done[:120].all()  # the first 12,000 draws, which the default model saw; the set grows
    finished = np.repeat(done, int(store.attrs["shard_size"]))[: store["status"].shape[0]]
    status = store["status"][:][finished]
    assert shipped.sizes["sample"] == int(np.sum(status == 0)) >= 11_000
    # non-converged draws are kept in the store with their reason, never silently dropped
    messages = store["message"][:][finished][status != 0]
    assert messages.size == np.sum(status != 0) and all(str(m).strip() for m in messages)
    assert np.all(np.asarray(shipped["status"]) == 0)


def test_shipped_set_follows_the_profile_schema(shipped):
    validate_profiles(shipped, "shipped training set")
    np.testing.assert_allclose(shipped["height"], default_height_grid())
    for line, half_width_A in ((HALPHA, 2.0), (CA8542, 1.5)):  # the synthesis windows
        wl = wavelengths_air_A(shipped, line)
        assert wl.min() <= line.center_air_A - half_width_A + 1e-6
        assert wl.max() >= line.center_air_A + half_width_A - 1e-6
        unit = u.Unit(shipped[f"I_{line.key}"].attrs["units"])
        assert unit.is_equivalent(u.W / (u.m**2 * u.Hz * u.sr))
    for name in ("log_ne", "log_T", "v"):
        assert np.all(np.isfinite(shipped[name]))
    # both signs of chromospheric flow (positive = downflow) are present
    v = np.asarray(shipped["v"])
    assert (v > 10).any() and (v < -10).any()


def test_shipped_set_carries_its_config():
    store = zarr.open_group(str(training_set_path()), mode="r")
    cfg = tomllib.loads(store.attrs["synth_config"])
    assert cfg["n"] == store["status"].shape[0] and cfg["seed"] == 0
    assert set(cfg) >= {"prior", "nlte"}
    assert store.attrs["lightweaver_version"]
