"""La Palma (CRISPEX) cubes, the format of CRISPRED-era SST/CRISP data (2008-2018): a 512-byte
text header, frames in (nx, ny, nt) Fortran order with tunings fastest, then Stokes, then scans,
and the tunings in a separate IDL-save spectfile. Built here from the example scan."""

import dataclasses

import numpy as np
import pytest
import xarray as xr
from synthetic import TINY_C, training_set

from radynversion.datasets import example_observation
from radynversion.engine import invert_to_zarr
from radynversion.errors import DataFileError, ProfileSchemaError
from radynversion.io import open_observation, read_lapalma_cube, write_lapalma_cube
from radynversion.io.observation import sniff_format
from radynversion.lines import CA8542, HALPHA
from radynversion.model import ConditionalINN
from radynversion.model.checkpoint import save_checkpoint
from radynversion.model.invert import invert
from radynversion.model.preprocess import atmosphere_to_array, normalise_profiles
from radynversion.schema import wavelengths_air_A

#: CRISPRED-era programs: H-alpha 15 tunings 0.2 A apart, Ca II 8542 21 at 0.1 A, off-centre
PROGRAMS = {HALPHA.key: (15, 0.2, -0.03), CA8542.key: (21, 0.1, 0.01)}


def _program(line):
    n, step, offset = PROGRAMS[line.key]
    return line.center_air_A + offset + step * (np.arange(n) - n // 2)


@pytest.fixture(scope="module")
def scans():
    """Two scans: the example scan's corner and a brighter copy of it."""
    one = example_observation().isel(y=slice(20, 25), x=slice(20, 27))
    if "time" in one.dims:
        one = one.isel(time=0, drop=True)
    second = one.copy()
    for ln in (HALPHA, CA8542):
        second[ln.var] = one[ln.var] * 1.1
    return xr.concat([one, second], dim="time")


@pytest.fixture(scope="module")
def lp_pair(tmp_path_factory, scans):
    """crispex.<line>.icube pair, Ca II polarimetric, with spectfiles beside them (offsets)."""
    d = tmp_path_factory.mktemp("lapalma")
    peak = float(scans[HALPHA.var].max())
    ha, _ = write_lapalma_cube(d / "crispex.6563.14:17:56.time_corrected.icube", scans, HALPHA,
                               _program(HALPHA), gain=peak / 20000)
    ca, _ = write_lapalma_cube(d / "crispex.stokes.8542.14:17:56.time_corrected.icube", scans, CA8542,
                               _program(CA8542), gain=peak / 12000, polarimetric=True)
    return ha, ca, peak


def test_a_crispex_pair_reads_with_its_spectfiles_found_beside_it(lp_pair, scans):
    ha, ca, peak = lp_pair
    assert sniff_format(ha) == "lapalma" and sniff_format(ha.parent / "spectfile.6563.idlsave") == "idlsave"
    ds = open_observation([ha, ca])
    assert ds.attrs["reader"] == "lapalma"
    for ln, gain in ((HALPHA, peak / 20000), (CA8542, peak / 12000)):
        assert ds[ln.var].dims == ("time", ln.dim, "y", "x")
        assert ds[ln.var].attrs["units"] == "DN"
        np.testing.assert_allclose(wavelengths_air_A(ds, ln), _program(ln), atol=1e-4)
        # Stokes I of each scan, in the right place: the file's values are the scan's over the gain
        truth = scans[ln.var].interp({ln.dim: _program(ln)}).transpose("time", ln.dim, "y", "x") / gain
        np.testing.assert_allclose(ds[ln.var].values, truth.values, atol=0.51)
    assert any(f.endswith("spectfile.8542.idlsave") for f in ds.attrs["source_files"])


def test_lazy_reads_equal_eager_ones_and_stokes_v_is_there(lp_pair):
    _, ca, _ = lp_pair
    eager = read_lapalma_cube(ca)
    lazy = read_lapalma_cube(ca, chunks={})
    assert lazy[CA8542.var].chunks is not None
    np.testing.assert_array_equal(lazy[CA8542.var].values, eager[CA8542.var].values)
    v = read_lapalma_cube(ca, stokes="V")
    assert np.all(v[CA8542.var].values == 0)  # written as zero
    with pytest.raises(ProfileSchemaError, match=r"Stokes V not in the cube"):
        read_lapalma_cube(lp_pair[0], stokes="V")


def test_spectfiles_given_with_the_cubes_absolute_wavelengths_and_float_cubes(tmp_path, scans):
    cubes = tmp_path / "cubes"
    spect = tmp_path / "spect"
    spect.mkdir()
    peak = float(scans[HALPHA.var].max())
    paths = []
    for ln in (HALPHA, CA8542):
        tag = str(int(round(ln.center_air_A)))
        c, s = write_lapalma_cube(cubes / f"cube_{tag}.fcube", scans, ln, _program(ln)[::-1], gain=peak,
                                  spectfile=spect / f"spectfile.{tag}.idlsave", offsets=False, dtype="float32")
        paths += [c, s]
    ds = open_observation(paths)
    for ln in (HALPHA, CA8542):
        np.testing.assert_allclose(wavelengths_air_A(ds, ln), _program(ln), atol=1e-6)  # sorted on reading
        assert ds[ln.var].dtype == np.float32
    with pytest.raises(DataFileError, match=r"cube_6563.fcube: no CRISPEX spectfile found"):
        open_observation(paths[0::2])  # spectfiles elsewhere and not given


def test_a_crispex_dn_pair_inverts_with_the_per_line_model_in_memory_and_to_zarr(lp_pair, tmp_path):
    ha, ca, _ = lp_pair
    model = ConditionalINN(dataclasses.replace(TINY_C, partial_coverage=True, normalisation="per_line")).eval()
    train = training_set(64)
    y, _ = normalise_profiles(train, normalisation="per_line")
    model.set_standardisation(atmosphere_to_array(train), y)
    out = invert(open_observation([ha, ca]), model, samples=8)
    assert out["log_T"].sizes["time"] == 2  # scans without times, paired by index
    assert np.isfinite(out["log_T"].values).all()
    path = save_checkpoint(tmp_path / "model.pt", model)
    invert_to_zarr(open_observation([ha, ca], chunks={"time": 1}), tmp_path / "lp.zarr", model=path, samples=8, batch_size=64,
                   progress=False)
    store = xr.open_zarr(tmp_path / "lp.zarr")
    assert store["log_T"].sizes["time"] == 2 and store.attrs["reader"] == "lapalma"
    np.testing.assert_array_equal(store["trusted"].values, out["trusted"].values)


def test_bad_la_palma_inputs_get_one_line_errors(lp_pair, tmp_path):
    ha, _, _ = lp_pair
    raw = ha.read_bytes()
    short = tmp_path / "crispex.6563.icube"
    short.write_bytes(raw[: len(raw) - 100])
    (tmp_path / "spectfile.6563.idlsave").write_bytes((ha.parent / "spectfile.6563.idlsave").read_bytes())
    with pytest.raises(DataFileError, match=r"crispex.6563.icube: .* bytes, but the header .* needs"):
        read_lapalma_cube(short)
    wrong = tmp_path / "other" / "crispex.6563.icube"
    wrong.parent.mkdir()
    wrong.write_bytes(raw)
    write_lapalma_cube(tmp_path / "x" / "crispex.6563.icube", example_observation().isel(y=slice(0, 1), x=slice(0, 1)),
                       HALPHA, _program(HALPHA)[:7], gain=1e-12, spectfile=wrong.parent / "spectfile.6563.idlsave")
    with pytest.raises(ProfileSchemaError, match=r"not a whole number of scans of 7 tunings"):
        read_lapalma_cube(wrong)
    nameless = tmp_path / "nameless" / "cube.icube"
    nameless.parent.mkdir()
    nameless.write_bytes(raw)
    (nameless.parent / "spectfile.idlsave").write_bytes((ha.parent / "spectfile.6563.idlsave").read_bytes())
    with pytest.raises(ProfileSchemaError, match=r"no file name says which line"):
        read_lapalma_cube(nameless)
    assert read_lapalma_cube(nameless, line="halpha").attrs["line"] == "halpha"
    text = tmp_path / "notes.icube"
    text.write_text("not a cube")
    with pytest.raises(DataFileError, match=r"notes.icube: .*shorter than the 512-byte header"):
        open_observation([text])
