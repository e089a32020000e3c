"""Figures: training coverage, one pixel's posterior, maps of a scan (small synthetic inputs)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from astropy.io import fits  # noqa: E402

from radynversion import plot  # noqa: E402
from radynversion.atmosphere import VARIABLE_ATTRS, VARIABLES, default_height_grid  # noqa: E402
from radynversion.lines import LINES  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

H = default_height_grid()
QUANTILES = (0.05, 0.16, 0.5, 0.84, 0.95)


def true_atmosphere(z_tr: float = 1.2, v_cond: float = 40.0) -> np.ndarray:
    """A flare-like atmosphere ``(3, H)``: TR at ``z_tr`` Mm, a condensation below it."""
    log_t = 3.8 + 0.3 * (H > 0.6) + 2.8 / (1 + np.exp(-(H - z_tr) / 0.05))
    log_ne = 13.5 - 1.2 * H + 1.0 * np.exp(-(((H - z_tr + 0.2) / 0.3) ** 2))
    v = v_cond * np.exp(-(((H - z_tr + 0.1) / 0.1) ** 2)) - 80.0 * np.clip(np.tanh(H - z_tr), 0.0, None)
    return np.stack([log_ne, log_t, v])


def fake_samples(n: int = 400, seed: int = 0) -> np.ndarray:
    """Posterior samples ``(n, 150)`` scattered about :func:`true_atmosphere`, wider in T."""
    rng = np.random.default_rng(seed)
    t = true_atmosphere()
    s = t[None] + rng.normal(size=(n, 3, 1)) * np.array([0.1, 0.15, 8.0])[None, :, None]
    s += rng.normal(size=(n, 3, H.size)) * np.array([0.05, 0.1, 3.0])[None, :, None]
    return s.reshape(n, 3 * H.size)


def fake_profiles(n: int, seed: int = 1) -> np.ndarray:
    """Normalised profiles ``(n, 60)``: an emission core on a wing, joint peak 1."""
    rng = np.random.default_rng(seed)
    parts = []
    for ln in LINES:
        dwl = ln.model_wavelengths() - ln.center_air_A
        parts.append(0.5 + 0.4 * np.exp(-((dwl / 0.3) ** 2))[None] + 0.02 * rng.normal(size=(n, dwl.size)))
    y = np.concatenate(parts, axis=1)
    return y / y.max(axis=1, keepdims=True)


def fake_result(ny: int = 20, nx: int = 24, with_header: bool = True) -> xr.Dataset:
    """A Dataset with the schema of radynversion.model.invert's output, and a map header."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    ribbon = np.exp(-(((yy - 0.3 * xx - 5) / 2.5) ** 2))  # (ny, nx)
    q = np.asarray(QUANTILES)
    spread = (q - 0.5)[:, None] * 2.0  # (Q, 1)
    data = {}
    for k, name in enumerate(VARIABLES):
        base = true_atmosphere()[k][None, None, :] * (1.0 if name != "v" else 0.0)
        if name == "v":
            base = base + 30.0 * ribbon[..., None] * np.sin(H / 2.0)[None, None, :] - 5.0
        else:
            base = base + (0.5 if name == "log_T" else 0.3) * ribbon[..., None]
        width = (0.05, 0.2, 5.0)[k] * (1.0 + ribbon)[..., None, None]
        vals = base[:, :, None, :] + spread[None, None] * width
        data[name] = (("y", "x", "quantile", "height"), vals.astype(np.float32), dict(VARIABLE_ATTRS[name]))
    data["misfit"] = (("y", "x"), (0.01 + 0.03 * ribbon).astype(np.float32),
                      {"units": "fraction of the joint peak"})
    data["peak"] = (("y", "x"), (3e-8 * (1.0 + ribbon)).astype(np.float32), {"units": "W / (m2 Hz sr)"})
    ds = xr.Dataset(data, coords={"quantile": ("quantile", q), "height": ("height", H, {"units": "Mm"}),
                                  "y": ("y", np.arange(ny)), "x": ("x", np.arange(nx))})
    if with_header:
        hdr = fits.Header()
        for k, v in dict(NAXIS=2, NAXIS1=nx, NAXIS2=ny, CTYPE1="HPLN-TAN", CTYPE2="HPLT-TAN",
                         CUNIT1="arcsec", CUNIT2="arcsec", CRPIX1=(nx + 1) / 2, CRPIX2=(ny + 1) / 2,
                         CRVAL1=512.3, CRVAL2=-287.6, CDELT1=0.059, CDELT2=0.059,
                         DATE_OBS=None).items():
            if v is not None:
                hdr[k] = v
        hdr["DATE-OBS"] = "2017-09-06T10:00:00"
        ds.attrs["map_header"] = hdr.tostring(sep="\n", endcard=False, padding=False)
    return ds


def test_posterior_figure_from_an_array_with_truth_and_round_trip(tmp_path):
    f = tmp_path / "posterior.png"
    fig = plot.posterior(fake_samples(), observed=fake_profiles(1)[0], round_trip=fake_profiles(200, seed=2),
                         truth=true_atmosphere(), path=f)
    assert f.is_file() and f.stat().st_size > 20_000
    axes = fig.axes
    labels = [ax.get_ylabel() for ax in axes]
    assert any("n_e" in t for t in labels) and any("T" in t for t in labels) and any("km" in t for t in labels)
    assert any(ax.get_label() == "<colorbar>" for ax in axes)
    assert sum("joint peak" in ax.get_ylabel() for ax in axes) == 2


def test_posterior_figure_from_invert_samples_dataset(tmp_path):
    """A Dataset like invert(..., return_samples=True) gives, one pixel selected."""
    s = fake_samples(300).reshape(300, 3, H.size)
    ds = xr.Dataset({f"{v}_samples": (("y", "x", "draw", "height"), s[None, None, :, k])
                     for k, v in enumerate(VARIABLES)}, coords={"height": H})
    post = plot.posterior_samples(ds.isel(y=0, x=0))
    assert post["log_T"].dims == ("draw", "height") and post.sizes["draw"] == 300
    np.testing.assert_allclose(post["v"].values, s[:, 2])
    truth = xr.Dataset({v: ("height", true_atmosphere()[k]) for k, v in enumerate(VARIABLES)})
    f = tmp_path / "posterior_ds.png"
    plot.posterior(ds.isel(y=0, x=0), truth=truth, path=f)
    assert f.is_file()
    with pytest.raises(ValueError, match="select one pixel"):
        plot.posterior_samples(ds.expand_dims(t=2))


def test_posterior_refuses_bad_shapes():
    with pytest.raises(ValueError, match="expected"):
        plot.posterior(np.zeros((10, 149)))
    with pytest.raises(ValueError, match="60"):
        plot.posterior(fake_samples(20), observed=np.zeros(59))


def test_maps_with_wcs_axes(tmp_path):
    f = tmp_path / "maps.png"
    res = fake_result()
    fig = plot.maps(res, heights_Mm=(0.5, 1.0, 1.5), path=f)
    assert f.is_file() and f.stat().st_size > 30_000
    image_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(image_axes) == 3 * 6 + 2  # 3 heights x (median, width) x 3 variables + misfit, peak
    assert type(image_axes[0]).__name__ == "WCSAxes"
    titles = " ".join(ax.get_title() for ax in image_axes)
    assert "0.50 Mm" in titles and "68 % width" in titles and "misfit" in titles
    cbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert any("km" in ax.get_ylabel() for ax in cbars) and any("dex" in ax.get_ylabel() for ax in cbars)


def test_maps_pixel_axes_time_and_header_from_the_scan(tmp_path):
    res = fake_result(with_header=False)
    fig = plot.maps(res, heights_Mm=(1.0,), path=tmp_path / "px.png")
    assert type(fig.axes[0]).__name__ != "WCSAxes"
    assert "pixel" in fig.axes[0].get_ylabel()
    # a time dim is selected; a header taken from the scan the result came from
    two = xr.concat([res, res], dim="time")
    scan_attrs = fake_result(4, 4).attrs
    fig = plot.maps(two.isel(y=slice(2, None)), heights_Mm=(1.0,), time=1,
                    header=xr.Dataset(attrs=scan_attrs), path=tmp_path / "t.png")
    assert type(fig.axes[0]).__name__ == "WCSAxes"
    with pytest.raises(ValueError, match="spatial dims"):
        plot.maps(res.isel(y=0))


# ---------------------------------------------------------------------------------------------
# issue 25, defect 7: height-axis break, joint peak defined, observation time, the verify and
# truth figures
# ---------------------------------------------------------------------------------------------


def _texts(fig) -> str:
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


def _fake_per_height() -> xr.Dataset:
    shape = (3, H.size)
    ones = np.ones(shape)
    data = {name: (("variable", "height"), value * ones) for name, value in (
        ("coverage68", 0.68), ("coverage90", 0.9), ("prior_coverage68", 0.7), ("prior_coverage90", 0.88),
        ("error", 0.1), ("prior_error", 0.5), ("width_ratio", 0.6))}
    return xr.Dataset(data, coords={"variable": list(VARIABLES), "height": H})


def _fake_training_set() -> xr.Dataset:
    from synthetic import training_set

    ds = training_set(48)
    kind = np.arange(48) % 3
    return ds.assign(kind=("sample", kind.astype(np.int8), {"flag_values": [0, 1, 2],
                                                           "flag_meanings": "quiet weak flare"}))


def test_height_axes_mark_the_break_of_the_node_grid_at_3_5_Mm():
    figures = {
        "posterior": plot.posterior(fake_samples(100), observed=fake_profiles(1)[0]),
        "coverage": plot.evaluation_coverage(_fake_per_height()),
        "errors": plot.evaluation_errors(_fake_per_height()),
        "training": plot.training_coverage(_fake_training_set()),
    }
    for what, fig in figures.items():
        height_axes = [ax for ax in fig.axes if ax.get_xscale() == "symlog"]
        assert height_axes, what
        for ax in height_axes:
            breaks = [ln for ln in ax.get_lines() if ln.get_gid() == "height_break"]
            assert len(breaks) == 1, what
            assert np.allclose(breaks[0].get_xdata(), plot.HEIGHT_BREAK_MM)
            assert sum(t.get_gid() == "height_break_mark" for t in ax.texts) == 2, what
            assert 3.5 in list(ax.get_xticks()) and 5 not in list(ax.get_xticks())  # 3.5 and 5 overlapped
        labelled = [ax.get_xlabel() for ax in height_axes if ax.get_xlabel()]
        assert labelled and all("height [Mm]" in t and "above 3.5" in t for t in labelled), what


def _fake_report(n: int = 3, with_round_trip: bool = True) -> xr.Dataset:
    y = fake_profiles(n)
    data = {"misfit": ("pixel", np.full(n, 0.02)), "misfit_nlte": ("pixel", np.full(n, 0.04)),
            "status": ("pixel", np.array([0] * (n - 1) + [2], dtype=np.int8)),
            "y_observed": (("pixel", "wl"), y), "y_nlte": (("pixel", "wl"), 0.9 * y)}
    if with_round_trip:
        data["y_round_trip"] = (("pixel", "wl"), 1.05 * y)
    return xr.Dataset(data, coords={"y_index": ("pixel", np.arange(n)), "x_index": ("pixel", np.arange(n) + 5)})


def test_verification_has_air_wavelength_axes_and_the_round_trip_beside_the_observation(tmp_path):
    f = tmp_path / "verify_report.png"
    fig = plot.verification(_fake_report(3), path=f)
    assert f.is_file()
    axes = [ax for ax in fig.get_axes() if ax.has_data()]
    assert len(axes) == 3 * len(LINES)
    for k, ax in enumerate(axes):
        ln = LINES[k % len(LINES)]
        assert "wavelength" in ax.get_xlabel() and "air" in ax.get_xlabel() and "AA" in ax.get_xlabel()
        lo, hi = ax.get_xlim()
        assert lo == pytest.approx(ln.center_air_A - ln.model_halfwidth_A, abs=1e-6)
        assert hi == pytest.approx(ln.center_air_A + ln.model_halfwidth_A, abs=1e-6)
        assert ax.xaxis.get_major_formatter().get_useOffset() is False  # values, not "+6.56e3"
        labels = {line.get_label() for line in ax.get_lines()}
        assert {"observed", "INN round trip", "NLTE re-synthesis"} <= labels
        rt = next(line for line in ax.get_lines() if line.get_label() == "INN round trip")
        np.testing.assert_allclose(rt.get_xdata(), ln.model_wavelengths())
    text = _texts(fig)
    assert "joint peak:" in text and "y=0, x=5" in text and "not converged" in text
    # a report without the round trip (no model) still draws
    fig = plot.verification(_fake_report(1, with_round_trip=False))
    assert all("INN round trip" not in {ln.get_label() for ln in ax.get_lines()} for ax in fig.get_axes())


def test_figures_with_joint_peak_units_define_the_joint_peak():
    res = fake_result()
    for fig in (plot.posterior(fake_samples(50), observed=fake_profiles(1)[0]),
                plot.maps(res, heights_Mm=(1.0,)),
                plot.verification(_fake_report(1))):
        text = _texts(fig)
        assert "joint peak" in text and "joint peak:" in text and "highest intensity over both lines" in text


def test_maps_are_titled_with_the_observation_time():
    res = fake_result()  # DATE-OBS in its map header only
    fig = plot.maps(res, heights_Mm=(1.0,), title="out.zarr")
    assert fig.get_suptitle().startswith("out.zarr") and "observed 2017-09-06T10:00:00" in fig.get_suptitle()
    # per-line time coordinates (as open_observation gives them) win, at the time step drawn
    two = xr.concat([res, res], dim="time").assign_coords(
        time_halpha=("time", np.array(["2024-05-14T08:30:00", "2024-05-14T08:31:00"], dtype="datetime64[ns]")),
        time_ca8542=("time", np.array(["2024-05-14T08:30:10", "2024-05-14T08:31:10"], dtype="datetime64[ns]")))
    title = plot.maps(two, heights_Mm=(1.0,), time=1).get_suptitle()
    assert "H-alpha 6563 2024-05-14T08:31:00" in title and "Ca II 8542 2024-05-14T08:31:10" in title
    assert plot.observation_time(res.assign_attrs({"DATE-OBS": "2020-01-02T03:04:05.6"})) == "2020-01-02T03:04:05"
    assert plot.observation_time(fake_result(with_header=False)) is None
    assert "observed" not in plot.maps(fake_result(with_header=False), heights_Mm=(1.0,)).get_suptitle()


def test_truth_comparison_shows_flare_pixels_and_quotes_their_errors():
    from matplotlib.collections import PathCollection, QuadMesh
    from matplotlib.colors import LogNorm

    res = fake_result(with_header=False)
    med = res.sel(quantile=0.5)
    truth = xr.Dataset({v: (("y", "x", "height"), med[v].values + 0.01) for v in VARIABLES},
                       coords={"height": H})
    kind = np.zeros((res.sizes["y"], res.sizes["x"]), dtype=np.int8)
    kind[8:12] = 2
    truth["kind"] = (("y", "x"), kind, {"flag_values": [0, 1, 2], "flag_meanings": "quiet weak flare"})
    fig = plot.truth_comparison(res, truth, height_Mm=1.0)
    scatter_axes = [ax for ax in fig.axes if "true " in ax.get_xlabel()]
    assert len(scatter_axes) == 3
    for ax in scatter_axes:
        dens = [c for c in ax.collections if isinstance(c, QuadMesh)]
        assert dens and isinstance(dens[0].norm, LogNorm)
        flare = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert flare and flare[0].get_label() == f"flare pixels ({int((kind == 2).sum())})"
        assert "all" in ax.get_title() and "flare" in ax.get_title()
    assert sum("flare" in ax.get_title() for ax in fig.axes) == 6  # scatter and difference panels
