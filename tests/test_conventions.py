"""Conventions fixed in one place: node grid, velocity transform, air/vacuum, config TOML."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radynversion import (
    CA8542,
    HALPHA,
    air_to_vacuum,
    default_height_grid,
    inverse_velocity_transform,
    vacuum_to_air,
    velocity_transform,
)
from radynversion.config import from_toml, to_toml
from radynversion.errors import ConfigError
from radynversion.synth.factory import SynthConfig
from radynversion.synth.nlte import NLTEConfig
from radynversion.synth.prior import PriorConfig


def test_height_grid_is_the_original():
    h = default_height_grid()
    assert h.shape == (50,)
    assert h[0] == pytest.approx(-0.065) and h[44] == pytest.approx(3.5) and h[-1] == pytest.approx(10.5)
    np.testing.assert_allclose(np.diff(h[:45]), (3.5 + 0.065) / 44, rtol=1e-4)
    np.testing.assert_allclose(h[45:], [4.360, 5.431, 6.766, 8.429, 10.5], atol=1e-3)


def test_line_centres_air_and_vacuum():
    assert HALPHA.center_vacuum_A == pytest.approx(6564.61, abs=0.01)
    assert CA8542.center_vacuum_A == pytest.approx(8544.44, abs=0.01)
    assert vacuum_to_air(6564.61) == pytest.approx(6562.80, abs=0.01)
    w = HALPHA.model_wavelengths()
    assert w.size == 30 and w[0] == pytest.approx(6561.4) and w[-1] == pytest.approx(6564.2)
    assert CA8542.model_wavelengths()[[0, -1]] == pytest.approx([8541.09, 8543.09])


@settings(max_examples=200, deadline=None)
@given(st.floats(3000.0, 25000.0))
def test_air_vacuum_round_trip(wl):
    # Morton (2000) vacuum->air and its numerical inverse agree to ~1e-5 A in the visible
    # (0.5 m/s at H-alpha), well below anything measurable.
    assert vacuum_to_air(air_to_vacuum(wl)) == pytest.approx(wl, abs=1e-4)
    assert air_to_vacuum(wl) > wl  # vacuum wavelengths are longer


@settings(max_examples=200, deadline=None)
@given(st.floats(-3000.0, 3000.0, allow_nan=False))
def test_velocity_transform_round_trip(v):
    vp = velocity_transform(v)
    assert np.sign(vp) == np.sign(v) or abs(v) < 1e-12
    assert float(inverse_velocity_transform(vp)) == pytest.approx(v, abs=1e-9 * max(1, abs(v)))


def test_config_toml_round_trip():
    cfg = SynthConfig(n=7, seed=3, prior=PriorConfig(mix=(0.2, 0.3, 0.5)), nlte=NLTEConfig(depth_points=90))
    text = to_toml(cfg)
    assert from_toml(SynthConfig, text) == cfg


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key"):
        from_toml(SynthConfig, "n = 3\nbogus = 1\n")


def test_velocity_from_an_extreme_draw_is_bounded_by_the_speed_of_light():
    """A draw far outside the training range (v' = 40 would be 1e40 km/s, inf in float32)
    maps to +-c, so quantiles stay finite."""
    v = inverse_velocity_transform(np.array([-40.0, -5.0, 0.0, 5.0, 40.0]))
    assert np.all(np.isfinite(v.astype(np.float32)))
    np.testing.assert_allclose(v[[0, 4]], [-299792.458, 299792.458], rtol=1e-12)
    np.testing.assert_allclose(v[[1, 3]], [-99999.0, 99999.0], rtol=1e-12)


def test_spans_checks_a_grid_against_wavelengths_with_margins():
    from radynversion.lines import span_text, spans

    grid = np.array([6561.0, 6562.0, 6563.0, 6564.0])
    assert spans(grid, [6561.5, 6563.5])
    assert spans(grid, [6561.0, 6564.0])  # the ends themselves
    assert not spans(grid, [6560.9, 6563.0])
    assert not spans(grid, [6561.5, 6563.5], margin_A=0.6)  # a 0.6 A kernel needs more grid
    assert spans(grid, [6560.9, 6564.2], margin_A=(-0.1, -0.2))  # allowed to fall short
    assert not spans([], [6562.0]) and spans(grid, [])
    assert span_text(grid) == "6561.000-6564.000 A" and span_text([]) == "no wavelengths"
