"""Observing programs that end a little short of the model windows (issue: observations as
users have them): within half a tuning step the edge value is used, never beyond."""

import numpy as np
import pytest
from synthetic import scan, tiny_model

from radynversion.errors import ProfileSchemaError
from radynversion.lines import CA8542, HALPHA
from radynversion.model.invert import invert
from radynversion.model.preprocess import check_window, edge_allowance_A, normalise_profiles


def _program(centre_A: float, half_A: float, step_A: float) -> np.ndarray:
    return centre_A + np.arange(-half_A, half_A + step_A / 2, step_A)


def _observe(ds, line, wl_new):
    """``ds`` with ``line`` seen at the tunings ``wl_new`` (linear interpolation of the fine
    profile, as a filtergraph without instrument smearing would)."""
    wl = ds[line.dim].values
    arr = ds[line.var].values
    new = np.apply_along_axis(lambda p: np.interp(wl_new, wl, p), -1, arr)
    out = ds.drop_vars([line.var, line.dim])
    out[line.var] = ((*ds[line.var].dims[:-1], line.dim), new.astype(np.float32), ds[line.var].attrs)
    return out.assign_coords({line.dim: (line.dim, wl_new, ds[line.dim].attrs)})


def test_programs_a_few_tens_of_mA_short_are_accepted():
    # CRISP's +-1.0 A around 8542.1 (10 mA short of the window), crisPy's H-alpha program
    # centred 30 mA from rest (30 mA short)
    check_window(_program(8542.1, 1.0, 0.1), CA8542, "ca.fits")
    check_window(_program(HALPHA.center_air_A + 0.03, 1.4, 0.2), HALPHA, "ha.fits")
    check_window(_program(HALPHA.center_air_A - 0.03, 1.4, 0.2), HALPHA, "ha.fits")
    assert edge_allowance_A(_program(8542.1, 1.0, 0.1)) == pytest.approx((0.05, 0.05))
    # capped: a sparse program (0.4 A steps ending at +-1.2 A) does not fill 0.2 A of wing
    assert edge_allowance_A(_program(HALPHA.center_air_A, 1.2, 0.4)) == pytest.approx((0.1, 0.1))
    with pytest.raises(ProfileSchemaError, match="by more than half a tuning step"):
        check_window(_program(HALPHA.center_air_A, 1.2, 0.4), HALPHA, "ha.fits")


def test_programs_short_by_more_than_half_a_step_are_refused():
    with pytest.raises(ProfileSchemaError, match=r"ca\.fits: I_ca8542 covers .* by more than half a tuning step"):
        check_window(_program(8542.2, 1.0, 0.1), CA8542, "ca.fits")  # 110 mA short, step 100 mA
    with pytest.raises(ProfileSchemaError, match="by more than half a tuning step"):
        check_window(_program(HALPHA.center_air_A + 0.12, 1.4, 0.2), HALPHA, "ha.fits")


def test_model_points_beyond_the_last_tuning_take_its_value():
    ds = scan(1, 2)
    ds = _observe(ds, CA8542, _program(8542.1, 1.0, 0.1))
    y, peak = normalise_profiles(ds)
    first_ca = HALPHA.model_points  # Ca II 8542's first model point is 10 mA below the data
    outermost = ds[CA8542.var].values.reshape(-1, ds.sizes[CA8542.dim])[:, 0]
    np.testing.assert_allclose(y[:, first_ca] * peak, outermost, rtol=1e-5)
    assert np.all(np.isfinite(y))


def test_a_short_program_inverts():
    ds = _observe(scan(1, 2), CA8542, _program(8542.1, 1.0, 0.1))
    ds = _observe(ds, HALPHA, _program(HALPHA.center_air_A + 0.03, 1.4, 0.2))
    out = invert(ds, tiny_model(), samples=32)
    assert np.all(np.isfinite(out["log_T"].values))
