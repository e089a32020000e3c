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
