"""Importing RADYN CDF output and the original Radynversion pickle (real files, written here)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import xarray as xr

from radynversion import CA8542, HALPHA, air_to_vacuum, default_height_grid, vacuum_to_air
from radynversion.cli import main
from radynversion.errors import DataFileError, StoreError
from radynversion.io.radyn import (
    PICKLE_INTENSITY_UNIT,
    RADYN_INTENSITY_UNIT,
    STORE_KIND,
    import_radyn,
    read_radyn_cdf,
    read_radynversion_pickle,
)

# ---------------------------------------------------------------------------------------------
# a small RADYN-like CDF
# ---------------------------------------------------------------------------------------------

TIMES = np.array([0.0, 5.0, 10.0])
NDEP = 60
QNORM = 8.0  # km/s
CC = 2.99792458e10
ZMU = np.array([0.2, 0.6, 0.95])
# transitions: Ly-alpha, H-alpha, Ca II 8542 (vacuum alamb), one continuum
ALAMB = np.array([1215.67, HALPHA.center_vacuum_A, CA8542.center_vacuum_A, 3646.0])
CONT = np.array([0, 0, 0, 1])
NQ = np.array([11, 21, 15, 5])
QMAX = np.array([20.0, 12.0, 10.0, 1.0])
IC = np.array([1e-7, 3e-5, 2.5e-5, 1e-5])  # continuum, erg / (s cm2 Hz sr)
MQ = int(NQ.max())

SCALARS = {  # every scalar radynpy's LazyRadynData reads when it opens a file
    "nel": 2, "nk1": 12, "nrad": ALAMB.size, "nline": 3, "nrfix": 0, "nmu": ZMU.size, "ndep": NDEP,
    "ndepm": NDEP - 1, "qnorm": QNORM, "hn3c2": 1.0, "hny4p": 1.0, "grav": 2.74e4, "ee": 1.602e-12,
    "em": 9.109e-28, "hh": 6.626e-27, "cc": CC, "bk": 1.381e-16, "amu": 1.6605e-24, "hce": 12398.4,
    "hc2": 3.97e8, "hck": 1.4388e8, "pi": np.pi,
}


def z_Mm(it: int) -> np.ndarray:
    """RADYN heights [Mm] at time step ``it``: top first, non-uniform, moving with time."""
    s = np.linspace(1.0, 0.0, NDEP)
    return -0.3 + 12.3 * s**2 + 0.05 * it


def log_T_true(h: np.ndarray, it: int) -> np.ndarray:
    return 3.7 + 0.2 * h + 0.1 * it


def log_ne_true(h: np.ndarray, it: int) -> np.ndarray:
    return 13.0 - 0.5 * h + 0.05 * it


def vz1_cm_s(h: np.ndarray) -> np.ndarray:
    """Downflow (condensation) of 20 km/s between 0.8 and 2.2 Mm, 5 km/s upflow above 5 Mm."""
    return np.where((h >= 0.8) & (h <= 2.2), -20e5, np.where(h >= 5.0, 5e5, 0.0))


def q_grid(kr: int) -> np.ndarray:
    return np.linspace(-QMAX[kr], QMAX[kr], NQ[kr])


def line_shape(q: np.ndarray) -> np.ndarray:
    """Absorption profile with a tilt, so the wavelength orientation is testable."""
    return 1.0 - 0.7 * np.exp(-((q / 2.0) ** 2)) + 0.01 * q


def outint_value(it: int, imu: int, kr: int, q: np.ndarray) -> np.ndarray:
    return IC[kr] * line_shape(q) * ZMU[imu] * (1.0 + 0.1 * it)


def write_radyn_cdf(path: Path, omit: tuple[str, ...] = ()) -> Path:
    from cdflib.cdfwrite import CDF

    nt = TIMES.size
    z = np.stack([z_Mm(it) for it in range(nt)]) * 1e8
    hz = z / 1e8
    arrays_rec = {  # record-varying (time) variables
        "time": TIMES,
        "z1": z,
        "tg1": np.stack([10 ** log_T_true(hz[it], it) for it in range(nt)]),
        "ne1": np.stack([10 ** log_ne_true(hz[it], it) for it in range(nt)]),
        "vz1": np.stack([vz1_cm_s(hz[it]) for it in range(nt)]),
    }
    q = np.zeros((MQ, ALAMB.size))
    outint = np.zeros((nt, MQ + 1, ZMU.size, ALAMB.size))
    for kr in range(ALAMB.size):
        q[: NQ[kr], kr] = q_grid(kr)
        for it in range(nt):
            for imu in range(ZMU.size):
                outint[it, 0, imu, kr] = IC[kr] * ZMU[imu] * (1.0 + 0.1 * it)
                outint[it, 1 : NQ[kr] + 1, imu, kr] = outint_value(it, imu, kr, q_grid(kr))
    arrays_rec["outint"] = outint
    arrays_const = {
        "alamb": ALAMB, "q": q, "nq": NQ.astype(np.int32), "cont": CONT.astype(np.int32),
        "ind": np.full(ALAMB.size, 2, np.int32), "zmu": ZMU, "wmu": np.full(ZMU.size, 1 / 3),
    }
    cdf = CDF(str(path), cdf_spec={"Majority": "row_major"})

    def write(name, data, rec_vary):
        data = np.asarray(data)
        is_int = data.dtype.kind in "iu"
        dtype = CDF.CDF_INT4 if is_int else CDF.CDF_DOUBLE
        data = data.astype(np.int32 if is_int else np.float64)
        dims = list(data.shape[1:]) if rec_vary else list(data.shape)
        cdf.write_var({"Variable": name, "Data_Type": dtype, "Num_Elements": 1, "Rec_Vary": rec_vary,
                       "Dim_Sizes": dims}, var_data=data)

    for name, value in SCALARS.items():
        if name not in omit:
            write(name, np.array(value), False)
    for name, value in arrays_const.items():
        if name not in omit:
            write(name, value, False)
    for name, value in arrays_rec.items():  # outint last: the biggest, at the end of the file
        if name not in omit:
            write(name, value, True)
    cdf.close()
    return path


@pytest.fixture(scope="module")
def radyn_cdf(tmp_path_factory) -> Path:
    return write_radyn_cdf(tmp_path_factory.mktemp("radyn") / "radyn_out.cdf")


def node(h: float) -> int:
    return int(np.argmin(np.abs(default_height_grid() - h)))


# ---------------------------------------------------------------------------------------------
# read_radyn_cdf
# ---------------------------------------------------------------------------------------------


def test_cdf_atmosphere_round_trips(radyn_cdf):
    ds = read_radyn_cdf(radyn_cdf)
    h = default_height_grid()
    assert ds.attrs["reader"].startswith("radynpy")
    assert dict(ds.sizes) == {"sample": 3, "height": 50, "wl_halpha": NQ[1], "wl_ca8542": NQ[2]}
    np.testing.assert_array_equal(ds["time_s"].values, TIMES)
    np.testing.assert_array_equal(ds["height"].values, h)
    for it in range(TIMES.size):  # log-linear fields interpolate exactly on the moving grid
        np.testing.assert_allclose(ds["log_T"].values[it], log_T_true(h, it), atol=2e-6)
        np.testing.assert_allclose(ds["log_ne"].values[it], log_ne_true(h, it), atol=2e-6)
    # a node: 1 Mm at t = 5 s
    assert ds["log_T"].sel(height=h[node(1.0)]).values[1] == pytest.approx(3.7 + 0.2 * h[node(1.0)] + 0.1, abs=2e-6)
    assert (ds["status"].values == 0).all() and ds["status"].dtype == np.int8
    assert (ds["message"].values == "").all()


def test_cdf_velocity_sign_downflow_is_positive(radyn_cdf):
    ds = read_radyn_cdf(radyn_cdf)
    v = ds["v"].values
    # RADYN vz1 = -20 km/s (moving down, z up) in the condensation -> v = +20 km/s (downflow)
    assert v[:, node(1.5)] == pytest.approx([20.0] * 3)
    # RADYN vz1 = +5 km/s (evaporation, up) above 5 Mm -> v = -5 km/s
    assert v[:, node(6.766)] == pytest.approx([-5.0] * 3)
    assert v[:, node(0.3)] == pytest.approx([0.0] * 3)
    assert "vz1 negated" in ds.attrs["conversions"]


def test_cdf_line_profiles(radyn_cdf):
    ds = read_radyn_cdf(radyn_cdf, add_continuum=False)
    for ln, kr in ((HALPHA, 1), (CA8542, 2)):
        wl = ds[ln.dim].values
        assert ds[ln.dim].attrs["wavelength_medium"] == "air" and ds[ln.dim].attrs["units"] == "Angstrom"
        assert np.all(np.diff(wl) > 0)
        # q = 0 (the middle point) is alamb (vacuum) -> the air line centre
        mid = NQ[kr] // 2
        assert wl[mid] == pytest.approx(ln.center_air_A, abs=1e-3)
        vac = ALAMB[kr] / (q_grid(kr) * QNORM * 1e5 / CC + 1)
        np.testing.assert_allclose(wl, np.sort(vacuum_to_air(vac)), rtol=1e-12)
        assert u.Unit(ds[ln.var].attrs["units"]) == u.Unit(RADYN_INTENSITY_UNIT)
        assert ds.attrs[f"kr_{ln.key}"] == kr and ds.attrs[f"alamb_medium_{ln.key}"] == "vacuum"
        # mu nearest 1 (index 2); increasing q = shorter wavelength, so the profile is reversed
        for it in range(TIMES.size):
            expect = outint_value(it, 2, kr, q_grid(kr))[::-1]
            np.testing.assert_allclose(ds[ln.var].values[it], expect, rtol=1e-6)
    assert ds.attrs["mu"] == pytest.approx(0.95)


def test_cdf_add_continuum_and_time_selection(radyn_cdf):
    ds = read_radyn_cdf(radyn_cdf, times=[4.0])  # default: continuum added, as the original export
    assert ds.sizes["sample"] == 1 and ds["time_s"].values[0] == 5.0 and ds["time_index"].values[0] == 1
    expect = (outint_value(1, 2, 1, q_grid(1)) + IC[1] * ZMU[2] * 1.1)[::-1]
    np.testing.assert_allclose(ds["I_halpha"].values[0], expect, rtol=1e-6)


def test_cdf_nodes_outside_the_column_are_flagged(radyn_cdf):
    ds = read_radyn_cdf(radyn_cdf, heights_Mm=np.array([-1.0, 0.0, 1.0, 5.0]))
    assert (ds["status"].values == 0).all()
    assert all("1 of 4 nodes outside the RADYN column" in m for m in ds["message"].values)


def test_cdf_without_a_radynpy_scalar_falls_back_to_cdflib(tmp_path):
    path = write_radyn_cdf(tmp_path / "old.cdf", omit=("hn3c2",))
    ds = read_radyn_cdf(path)
    assert ds.attrs["reader"].startswith("cdflib")
    assert ds["v"].values[0, node(1.5)] == pytest.approx(20.0)


def test_cdf_missing_variable_is_named(tmp_path):
    path = write_radyn_cdf(tmp_path / "novel.cdf", omit=("vz1",))
    with pytest.raises(DataFileError, match=r"novel\.cdf.*'vz1' is missing"):
        read_radyn_cdf(path)


def test_truncated_cdf_is_a_data_file_error(tmp_path, radyn_cdf):
    data = radyn_cdf.read_bytes()
    bad = tmp_path / "truncated.cdf"
    bad.write_bytes(data[: int(0.6 * len(data))])
    with pytest.raises(DataFileError, match=r"truncated\.cdf: truncated CDF file") as err:
        read_radyn_cdf(bad)
    assert "\n" not in str(err.value)


def test_non_cdf_file_is_a_data_file_error(tmp_path):
    bad = tmp_path / "notes.cdf"
    bad.write_text("this is not a CDF file\n")
    with pytest.raises(DataFileError, match=r"notes\.cdf: not a readable CDF file"):
        read_radyn_cdf(bad)
    with pytest.raises(DataFileError, match=r"absent\.cdf: no such file"):
        read_radyn_cdf(tmp_path / "absent.cdf")


# ---------------------------------------------------------------------------------------------
# the original pickle
# ---------------------------------------------------------------------------------------------

N_PICKLE = 4


def pickle_dict(as_torch: bool) -> dict:
    """The layout of Goobley/Radynversion's ExportSimpleLineBlobForTraining.py (50 heights)."""
    h = default_height_grid()
    rng = np.random.default_rng(1)
    ne = 10 ** (12.0 - 0.3 * h + 0.01 * np.arange(N_PICKLE)[:, None])
    temp = 10 ** (3.8 + 0.1 * h + 0.01 * np.arange(N_PICKLE)[:, None])
    vel = np.zeros((N_PICKLE, h.size))
    vel[:, node(1.5)] = -30e5  # vz1 [cm/s]: 30 km/s downwards
    vel[:, node(6.766)] = 20e5  # 20 km/s upwards
    wls = [np.linspace(HALPHA.center_vacuum_A - 1.4, HALPHA.center_vacuum_A + 1.4, 31),
           np.linspace(CA8542.center_vacuum_A - 1.0, CA8542.center_vacuum_A + 1.0, 31)]
    lines = [3e6 * (1 + 0.1 * rng.random((N_PICKLE, 31))), 2e6 * (1 + 0.1 * rng.random((N_PICKLE, 31)))]
    d = {"lineInfo": [{"line": "H_alpha", "kr": 4, "iel": 0, "halfWidth": 1.4},
                      {"line": "CaII k", "kr": 20, "iel": 1, "halfWidth": 1.0}],
         "nTime": [2, 2], "mu": [0.953, 0.953], "beamSpectralIndex": [3.0, 5.0]}
    if as_torch:
        import torch

        def rows(a):
            return [torch.from_numpy(r.astype(np.float32).copy()) for r in a]

        d.update(ne=rows(ne), temperature=rows(temp), vel=rows(vel), line=[rows(a) for a in lines],
                 wavelength=[torch.from_numpy(w.copy()) for w in wls],
                 z=torch.from_numpy((h * 1e8).astype(np.float32)))
    else:
        d.update(ne=ne, temperature=temp, vel=vel, line=lines, wavelength=wls, z=h * 1e8)
    return d, (ne, temp, vel, wls, lines)


@pytest.mark.parametrize("as_torch", [True, False], ids=["torch-lists", "numpy-arrays"])
def test_pickle_round_trips(tmp_path, as_torch):
    d, (ne, temp, vel, wls, lines) = pickle_dict(as_torch)
    path = tmp_path / "DoublePicoGigaPickle50.pickle"
    path.write_bytes(pickle.dumps(d))
    ds = read_radynversion_pickle(path)
    tol = 1e-6 if not as_torch else 1e-5
    np.testing.assert_array_equal(ds["height"].values, default_height_grid())
    np.testing.assert_allclose(ds["log_ne"].values, np.log10(ne), atol=tol)
    np.testing.assert_allclose(ds["log_T"].values, np.log10(temp), atol=tol)
    # pickle vel is RADYN vz1 in cm/s: -30e5 (down) -> v = +30 km/s; +20e5 (up) -> v = -20 km/s
    assert ds["v"].values[:, node(1.5)] == pytest.approx([30.0] * N_PICKLE)
    assert ds["v"].values[:, node(6.766)] == pytest.approx([-20.0] * N_PICKLE)
    for ln, wl, prof in ((HALPHA, wls[0], lines[0]), (CA8542, wls[1], lines[1])):
        np.testing.assert_allclose(ds[ln.dim].values, vacuum_to_air(wl),
                                   rtol=1e-12)
        assert u.Unit(ds[ln.var].attrs["units"]) == u.Unit(PICKLE_INTENSITY_UNIT)
        np.testing.assert_allclose(ds[ln.var].values, prof, rtol=1e-6)
    np.testing.assert_array_equal(ds["run"].values, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds["time_index"].values, [0, 1, 0, 1])
    assert np.isnan(ds["time_s"].values).all()
    assert ds.attrs["mu"] == pytest.approx(0.953)


def test_pickle_errors(tmp_path):
    d, _ = pickle_dict(False)
    trunc = tmp_path / "cut.pickle"
    trunc.write_bytes(pickle.dumps(d)[:500])
    with pytest.raises(DataFileError, match=r"cut\.pickle: not a readable pickle"):
        read_radynversion_pickle(trunc)
    foreign = tmp_path / "foreign.pickle"
    foreign.write_bytes(pickle.dumps({"ne": os.getcwd}))
    with pytest.raises(DataFileError, match=r"foreign\.pickle: .*getcwd.*refusing"):
        read_radynversion_pickle(foreign)
    short = tmp_path / "short.pickle"
    short.write_bytes(pickle.dumps({k: v for k, v in d.items() if k != "vel"}))
    with pytest.raises(DataFileError, match=r"short\.pickle: pickle lacks \['vel'\]"):
        read_radynversion_pickle(short)
    normalised = tmp_path / "normalised.pickle"
    d2 = dict(d, line=[a / a.max() for a in d["line"]])
    normalised.write_bytes(pickle.dumps(d2))
    with pytest.raises(DataFileError, match="intensity_unit"):
        read_radynversion_pickle(normalised)
    ds = read_radynversion_pickle(normalised, intensity_unit="W / (m2 Hz sr)")
    assert u.Unit(ds["I_halpha"].attrs["units"]) == u.Unit("W / (m2 Hz sr)")


# ---------------------------------------------------------------------------------------------
# import_radyn and the CLI
# ---------------------------------------------------------------------------------------------


def test_import_pickle_then_cdf_writes_a_training_store(tmp_path, radyn_cdf):
    from radynversion.datasets import training_set

    d, _ = pickle_dict(True)
    pkl = tmp_path / "train.pickle"
    pkl.write_bytes(pickle.dumps(d))
    # RADYN names its files radyn_out.<params>, without .cdf: recognised by the CDF magic number
    raw = tmp_path / "radyn_out.val3c_d3_1.0e11_t20s_10kev_fp"
    raw.write_bytes(radyn_cdf.read_bytes())
    out = tmp_path / "train.zarr"
    ds = import_radyn([pkl, raw], out=out)
    assert ds.sizes["sample"] == N_PICKLE + TIMES.size
    np.testing.assert_array_equal(ds["sample"].values, np.arange(N_PICKLE + TIMES.size))
    assert list(ds["source"].values) == [pkl.name] * N_PICKLE + [raw.name] * TIMES.size
    assert ds.attrs["wavelengths_interpolated_from"] == [raw.name]
    # the CDF part: converted to the pickle's per-Angstrom unit and onto its (narrower) grid
    one = read_radyn_cdf(radyn_cdf)
    own_wl = one["wl_halpha"].values
    per_aa = (one["I_halpha"].values[0] * u.Unit(RADYN_INTENSITY_UNIT)).to_value(
        PICKLE_INTENSITY_UNIT, u.spectral_density(air_to_vacuum(own_wl) * u.AA))
    expect = np.interp(ds["wl_halpha"].values, own_wl, per_aa)
    np.testing.assert_allclose(ds["I_halpha"].values[N_PICKLE], expect, rtol=1e-5)
    assert ds["v"].values[N_PICKLE, node(1.5)] == pytest.approx(20.0)

    stored = xr.open_zarr(out, consolidated=False)
    assert stored.attrs["radynversion_store"] == STORE_KIND
    assert int(stored.attrs.get("zarr_format", 2)) == 2
    assert (out / ".zgroup").exists()  # Zarr format 2
    np.testing.assert_array_equal(stored["v"].values, ds["v"].values)
    assert training_set(out).sizes["sample"] == N_PICKLE + TIMES.size

    with pytest.raises(StoreError, match="exists"):
        import_radyn([pkl], out=out)


def test_import_cdf_then_narrower_pickle_is_refused(tmp_path, radyn_cdf):
    d, _ = pickle_dict(False)
    pkl = tmp_path / "train.pkl"
    pkl.write_bytes(pickle.dumps(d))
    with pytest.raises(DataFileError, match=r"train\.pkl: I_halpha spans .* narrower than the first file"):
        import_radyn([radyn_cdf, pkl])


def test_import_unknown_or_missing_files(tmp_path, radyn_cdf):
    txt = tmp_path / "readme.txt"
    txt.write_text("hello")
    with pytest.raises(DataFileError, match=r"readme\.txt: neither a CDF file nor a pickle"):
        import_radyn([radyn_cdf, txt])
    with pytest.raises(DataFileError, match=r"gone\.cdf: no such file"):
        import_radyn([tmp_path / "gone.cdf"])


def test_cli_import_radyn(tmp_path, radyn_cdf, capsys):
    out = tmp_path / "cli.zarr"
    assert main(["import-radyn", str(radyn_cdf), "--out", str(out)]) == 0
    assert '"samples": 3' in capsys.readouterr().out
    bad = tmp_path / "bad.cdf"
    bad.write_bytes(b"\x00" * 10)
    assert main(["import-radyn", str(bad), "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert "bad.cdf" in err and err.count("\n") == 1
