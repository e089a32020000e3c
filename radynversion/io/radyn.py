"""Import RADYN simulations and the original Radynversion training pickle as training sets.

Both readers return a Dataset in the training-set layout of :mod:`radynversion.synth.factory`:
``I_halpha (sample, wl_halpha)``, ``I_ca8542 (sample, wl_ca8542)`` (wavelengths in air
Angstrom, increasing, intensity units in attrs), ``log_ne, log_T, v (sample, height)`` on the
node grid [Mm], ``status``/``message``/``kind (sample)``, and the coordinates ``time_s``,
``source``, ``run`` and ``time_index`` that say where every sample came from.

RADYN CDF files (:func:`read_radyn_cdf`)
---------------------------------------
Read with :class:`radynpy.cdf.CdfLoader.LazyRadynData`. That class reads every scalar RADYN
variable it documents (``nel``, ``qnorm``, ``cc``, ... 22 of them) when it opens a file; a file
that lacks one of them is read with :mod:`cdflib` directly instead, with the same variable
names and index order (recorded in the ``reader`` attr). A file shorter than the end-of-file
offset its CDF header declares is reported as truncated before anything is read. Conventions, all
from radynpy's variable help (``radynpy/cdf/RadynFormatHelp.pickle``) and its own use of them:

* ``z1[t, k]`` interface heights [cm], z upwards, the grid moves with time and is stored top
  first; ``tg1[t, k]`` [K], ``ne1[t, k]`` [cm^-3] and ``vz1[t, k]`` [cm/s] on the same ``k``
  (interpolated against ``z1`` as the original Radynversion export did);
* ``vz1`` is positive **upwards** (radynpy's ``ContribFn`` plots ``vz1 * 1e-5`` on the same axis
  as ``q * qnorm`` and notes "POSITIVE velocity is blueshift ... NEGATIVE velocity is downflow,
  redshift"), so ``v = -vz1 / 1e5`` km/s (positive = downflow);
* ``time[t]`` [s] (``timet`` is accepted when ``time`` is absent);
* ``alamb[kr]`` is the **vacuum** wavelength [Angstrom] (radynpy: "vacuum wavelength in
  angstrom"; level energies ``ev`` are "input in cm^-1" and ``lambda = hce / energy``). The
  line is still matched against
  both media, within 0.9 A (half the 1.8/2.4 A air-vacuum shift), and the medium found is
  recorded, so a file with air ``alamb`` is converted correctly;
* ``q[nu, kr]`` frequency offsets in units of the Doppler width ``qnorm`` [km/s], positive =
  higher frequency; the line's wavelengths are ``alamb / (1 + q[0:nq] qnorm 1e5 / cc)``
  (radynpy ``matsplotlib/ContribFn.py``), so increasing ``q`` means decreasing wavelength;
* ``outint[t, nu, mu, kr]`` the emergent intensity [erg s^-1 cm^-2 sr^-1 Hz^-1]: ``nu = 0`` is the
  continuum at the line, ``nu = 1..nq`` the line's frequency points, aligned with
  ``q[0..nq-1]``. Those points are taken as the full (line + continuum) intensity, unchanged,
  as ``radynpy.utils.LineProfiles.profile`` (G. Kerr, radynpy on GitHub, newer than the
  installed release) does, whose ``lcurve`` lists "subtract continuum to return only the
  line-only intensity" as a to-do; the original Radynversion export added ``outint[nu=0]``
  on top (see below). ``add_continuum=True`` (the default) does the same, so RADYN imports
  match the original training data; pass False for radynpy's reading;
* ``zmu[mu]`` the direction cosines (radynpy: ``xmu``/``ymu`` exist but are only used for 1D
  MHD; ``xmu`` is used when ``zmu`` is missing); the ray nearest disk centre is taken;
* ``ind[kr] == 1`` marks a one-sided (symmetric) quadrature: the profile is mirrored.

Samples whose ``tg1``/``ne1`` are not positive get ``status = 2``; nodes outside the RADYN
column at a time step take the end value and say so in ``message`` (``status`` stays 0).

The original Radynversion pickle (:func:`read_radynversion_pickle`)
------------------------------------------------------------------
Made by ``ExportSimpleLineBlobForTraining.py`` of github.com/Goobley/Radynversion and read by
its ``Inn2.AtmosData``. From that code:

* ``z``: the static grid in **cm** (``-6.5e6 ... 1.05e9``, the grid of
  :func:`radynversion.atmosphere.default_height_grid` for 50 points);
* ``ne`` [cm^-3], ``temperature`` [K], ``vel``: ``ne1``, ``tg1`` and ``vz1`` interpolated onto
  ``z`` unchanged, so ``vel`` is in **cm/s, positive upwards** (``AtmosData`` divides it by 1e5
  and never flips it): ``v = -vel / 1e5`` km/s;
* ``wavelength``: ``alamb / (1 + q qnorm 1e5 / cc)``, i.e. **vacuum** Angstrom, reversed to
  increasing and cut to +-halfWidth around ``alamb``; converted to air here;
* ``line``: ``(outint[nu=1..nq] + outint[nu=0]) * cc * 1e8 / wl^2``, i.e. intensity **per
  Angstrom**, erg s^-1 cm^-2 sr^-1 A^-1, with the continuum point ``outint[nu=0]`` added to
  the line points. The values are kept as they are (units ``erg / (s cm2 sr Angstrom)``); the
  added continuum is recorded in the attrs;
* entries are lists of torch tensors (one per sample) or stacked arrays; both are accepted.

The pickle is unpickled with an allowlist (numpy arrays and scalars, torch tensors and dtypes,
``OrderedDict``); torch storages are loaded with ``torch.load(weights_only=True)``. Anything
else is refused with a :class:`~radynversion.errors.DataFileError`.

:func:`import_radyn` reads any mix of files, puts them on the first file's node heights,
intensity unit and wavelength grids, and concatenates them along ``sample``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..atmosphere import VARIABLE_ATTRS, atmosphere_dataset, default_height_grid
from ..errors import ConfigError, DataFileError, StoreError
from ..lines import LINES, Line, span_text, spans, vacuum_to_air
from ..schema import convert_intensity, profile_dataset, validate_profiles

__all__ = [
    "STORE_KIND",
    "RADYN_INTENSITY_UNIT",
    "PICKLE_INTENSITY_UNIT",
    "read_radyn_cdf",
    "read_radynversion_pickle",
    "import_radyn",
]

#: ``radynversion_store`` attr of a store written by :func:`import_radyn`.
STORE_KIND = "radynversion training set (RADYN import)"
#: Units of RADYN ``outint`` (CGS, per unit frequency).
RADYN_INTENSITY_UNIT = "erg / (s cm2 Hz sr)"
#: Units of the original pickle's line profiles (``outint * cc * 1e8 / wl^2``).
PICKLE_INTENSITY_UNIT = "erg / (s cm2 sr Angstrom)"

MESSAGE_WIDTH = 120
#: half the air-vacuum shift of H-alpha (1.81 A) is 0.9 A: a centre within this of one medium's
#: rest wavelength cannot be the other medium's.
_CENTRE_TOLERANCE_A = 0.9
_CM_PER_MM = 1.0e8
_CM_S_PER_KM_S = 1.0e5
_C_CGS = 2.99792458e10
_CDF_MAGIC = {bytes.fromhex("cdf30001"), bytes.fromhex("cdf26002"), bytes.fromhex("0000ffff")}
_STATUS_ATTRS = {
    "flag_values": [0, 1, 2],
    "flag_meanings": "converged not_converged failed",
    "long_name": "0 = usable; 2 = the source atmosphere has non-positive T or ne",
}
_KIND_ATTRS = {"flag_values": [-1, 0, 1, 2], "flag_meanings": "external quiet weak flare",
               "long_name": "prior kind; -1 = external (imported from RADYN)"}
_CONVENTIONS = "v positive = downflow = redshift; wavelengths air Angstrom; intensity at mu = %g"

#: what the RADYN variables are, for error messages
_RADYN_EXPECTED = {
    "z1": "heights [cm] per time step, shape (t, k)",
    "tg1": "temperature [K], shape (t, k)",
    "ne1": "electron density [cm^-3], shape (t, k)",
    "vz1": "velocity [cm/s, positive up], shape (t, k)",
    "time": "times [s], shape (t,)",
    "outint": "emergent intensity, shape (t, nu, mu, kr)",
    "alamb": "line wavelengths [A], shape (kr,)",
    "q": "frequency offsets [Doppler units], shape (nu, kr)",
    "nq": "number of frequencies per transition, shape (kr,)",
    "qnorm": "the Doppler unit [km/s], a scalar",
    "zmu": "ray direction cosines, shape (mu,)",
    "cont": "1 for bound-free transitions, shape (kr,)",
    "ind": "1 for one-sided quadrature, shape (kr,)",
    "cc": "speed of light [cm/s], a scalar",
}


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _line_medium(centre_A: float, line: Line) -> str | None:
    """``"vacuum"`` or ``"air"`` if ``centre_A`` is within the tolerance of ``line``'s rest
    wavelength in that medium, else None."""
    d_vac = abs(centre_A - line.center_vacuum_A)
    d_air = abs(centre_A - line.center_air_A)
    if min(d_vac, d_air) > _CENTRE_TOLERANCE_A:
        return None
    return "vacuum" if d_vac <= d_air else "air"


def _check_heights(heights_Mm: np.ndarray | None) -> np.ndarray:
    h = default_height_grid() if heights_Mm is None else np.asarray(heights_Mm, dtype=float)
    if h.ndim != 1 or h.size < 2 or not np.all(np.isfinite(h)) or np.any(np.diff(h) <= 0):
        raise ConfigError("heights_Mm must be 1D, finite and strictly increasing (node heights in Mm)")
    return h


def _log10_positive(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log10 of ``x`` (any shape) and a boolean mask, per leading index, of rows that had a
    non-positive or non-finite value (those rows get NaN where the value was bad)."""
    x = np.asarray(x, dtype=float)
    bad = ~np.isfinite(x) | (x <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(bad, np.nan, np.log10(np.where(bad, 1.0, x)))
    return out, bad.reshape(bad.shape[0], -1).any(axis=1)


def _assemble(
    *,
    wavelengths_air: Mapping[str, np.ndarray],
    intensities: Mapping[str, np.ndarray],
    unit: str,
    log_ne: np.ndarray,
    log_T: np.ndarray,
    v: np.ndarray,
    heights_Mm: np.ndarray,
    status: np.ndarray,
    messages: Sequence[str],
    time_s: np.ndarray,
    time_index: np.ndarray,
    run: np.ndarray,
    source: str,
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """Build the training-set-layout Dataset from per-sample arrays (shapes ``(n, ...)``)."""
    n = int(np.asarray(log_ne).shape[0])
    spec = profile_dataset(
        wavelengths_air,
        {k: np.asarray(val, dtype=np.float32) for k, val in intensities.items()},
        unit,
        dims=("sample",),
        medium="air",
    )
    for ln in LINES:
        spec[ln.dim].attrs["long_name"] = f"{ln.label} wavelength (air)"
        spec[ln.var].attrs["long_name"] = f"{ln.label} emergent intensity"
    atmos = atmosphere_dataset(
        np.asarray(log_ne, dtype=np.float32), np.asarray(log_T, dtype=np.float32),
        np.asarray(v, dtype=np.float32), height_Mm=heights_Mm, dims=("sample",),
    )
    ds = xr.merge([spec, atmos])
    ds["status"] = ("sample", np.asarray(status, dtype=np.int8), dict(_STATUS_ATTRS))
    ds["message"] = ("sample", np.array([m[:MESSAGE_WIDTH] for m in messages], dtype=f"<U{MESSAGE_WIDTH}"),
                     {"long_name": "why a sample is flagged, or what was approximated"})
    ds["kind"] = ("sample", np.full(n, -1, dtype=np.int8), dict(_KIND_ATTRS))
    ds = ds.assign_coords(
        sample=("sample", np.arange(n)),
        time_s=("sample", np.asarray(time_s, dtype=float), {"units": "s", "long_name": "simulation time"}),
        time_index=("sample", np.asarray(time_index, dtype=np.int32),
                    {"long_name": "index of the time step within its run"}),
        run=("sample", np.asarray(run, dtype=np.int32), {"long_name": "index of the RADYN run within its source"}),
        source=("sample", np.array([source] * n, dtype=str), {"long_name": "file the sample came from"}),
    )
    ds.attrs = dict(attrs)
    return ds


# --------------------------------------------------------------------------------------------
# RADYN CDF
# --------------------------------------------------------------------------------------------


class _CdflibVariables:
    """Attribute access to the variables of a CDF file through :mod:`cdflib` (the fallback
    for files radynpy cannot open: it reads every scalar it knows at open)."""

    def __init__(self, cdf: Any) -> None:
        self._cdf = cdf

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = self._cdf.varget(name)
        setattr(self, name, value)
        return value


def _cdf_declared_size(path: Path) -> int | None:
    """The end-of-file offset an uncompressed CDF's global descriptor record declares (None if
    it cannot be told: compressed file, unknown version or unreadable header)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:4] == bytes.fromhex("cdf30001") and head[4:8] == bytes.fromhex("0000ffff"):
                gdr = int.from_bytes(head[20:28], "big", signed=True)  # CDR: size 8, type 4, GDR 8
                f.seek(gdr + 36)  # GDR: size 8, type 4, rVDR 8, zVDR 8, ADR 8, eof 8
                return int.from_bytes(f.read(8), "big", signed=True)
            if head[:4] == bytes.fromhex("cdf26002") and head[4:8] == bytes.fromhex("0000ffff"):
                gdr = int.from_bytes(head[16:20], "big", signed=True)  # CDR: size 4, type 4, GDR 4
                f.seek(gdr + 20)  # GDR: size 4, type 4, rVDR 4, zVDR 4, ADR 4, eof 4
                return int.from_bytes(f.read(4), "big", signed=True)
    except OSError:
        return None
    return None


def _open_radyn(path: Path) -> tuple[Any, set[str], str]:
    """Open ``path`` with radynpy (or cdflib); return the reader object, the names of the
    variables in the file and a description of the reader."""
    import cdflib

    declared, size = _cdf_declared_size(path), path.stat().st_size
    if declared is not None and declared > size:
        raise DataFileError(f"{path}: truncated CDF file ({size} bytes; its header declares {declared}); "
                            "expected complete RADYN CDF output")
    try:
        cdf = cdflib.CDF(str(path))
        info = cdf.cdf_info()
        names = set(info.zVariables) | set(info.rVariables)
    except Exception as err:  # noqa: BLE001 - cdflib raises OSError, ValueError, struct.error...
        raise DataFileError(f"{path}: not a readable CDF file ({type(err).__name__}: {err}); "
                            "expected RADYN CDF output") from None
    try:
        from radynpy.cdf.CdfLoader import LazyRadynData
    except ImportError as err:  # pragma: no cover - radynpy is a dependency
        return _CdflibVariables(cdf), names, f"cdflib {cdflib.__version__} (radynpy unavailable: {err})"
    try:
        return LazyRadynData(str(path), parseFilenameParams=False), names, "radynpy.cdf.CdfLoader.LazyRadynData"
    except Exception as err:  # noqa: BLE001
        why = f"{type(err).__name__}: {err}".replace("\n", " ")[:160]
        return _CdflibVariables(cdf), names, f"cdflib {cdflib.__version__} (radynpy could not open the file: {why})"


def _radyn_var(data: Any, names: set[str], name: str, path: Path, required: bool = True) -> np.ndarray | None:
    """Variable ``name`` as an ndarray (None if absent and not ``required``)."""
    if name not in names:
        if not required:
            return None
        raise DataFileError(f"{path}: RADYN variable {name!r} is missing; expected "
                            f"{_RADYN_EXPECTED.get(name, 'it')} (the file has {len(names)} variables)")
    try:
        try:
            value = getattr(data, name)
        except AttributeError:
            # radynpy only resolves the variables it documents; others via load_var
            data.load_var(name)
            value = getattr(data, name)
        return np.asarray(value)
    except Exception as err:  # noqa: BLE001
        raise DataFileError(f"{path}: cannot read RADYN variable {name!r} ({type(err).__name__}: {err}); "
                            "the file looks truncated or corrupt") from None


def _time_series(arr: np.ndarray, nt: int, ndim: int, name: str, path: Path) -> np.ndarray:
    """``arr`` with a leading time axis of length ``nt`` and ``ndim`` dims in all."""
    if arr.ndim == ndim - 1 and nt == 1:
        arr = arr[np.newaxis]
    if arr.ndim != ndim or arr.shape[0] != nt:
        raise DataFileError(f"{path}: RADYN variable {name!r} has shape {arr.shape}; expected "
                            f"{_RADYN_EXPECTED.get(name, f'{ndim} dims')} with t = {nt}")
    return arr


def _select_transition(alamb: np.ndarray, cont: np.ndarray | None, line: Line, path: Path) -> tuple[int, str]:
    """Index ``kr`` of the bound-bound transition that is ``line``, and the medium of ``alamb``."""
    candidates = [kr for kr in range(alamb.size) if cont is None or int(cont[kr]) == 0]
    best: tuple[float, int, str] | None = None
    for kr in candidates:
        medium = _line_medium(float(alamb[kr]), line)
        if medium is None:
            continue
        ref = line.center_vacuum_A if medium == "vacuum" else line.center_air_A
        d = abs(float(alamb[kr]) - ref)
        if best is None or d < best[0]:
            best = (d, kr, medium)
    if best is None:
        near = sorted(candidates, key=lambda k: abs(float(alamb[k]) - line.center_vacuum_A))[:3]
        found = ", ".join(f"{float(alamb[k]):.2f}" for k in near) or "none"
        raise DataFileError(
            f"{path}: no bound-bound transition in 'alamb' within {_CENTRE_TOLERANCE_A} A of {line.label} "
            f"({line.center_vacuum_A:.2f} A vacuum / {line.center_air_A:.2f} A air); nearest: {found} A")
    return best[1], best[2]


def _interp_column(h_cm: np.ndarray, z: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int]:
    """Interpolate ``values(z)`` (RADYN order) at ``h_cm``; also count nodes outside ``z``."""
    order = np.argsort(z, kind="stable")
    zs = z[order]
    outside = int(np.count_nonzero((h_cm < zs[0]) | (h_cm > zs[-1])))
    return np.interp(h_cm, zs, values[order]), outside


def read_radyn_cdf(
    path: str | Path,
    heights_Mm: np.ndarray | None = None,
    times: Sequence[float] | None = None,
    add_continuum: bool = True,
) -> xr.Dataset:
    """Read a RADYN CDF file as a training set: one sample per time step.

    Parameters
    ----------
    path : path
        RADYN CDF output (``radyn_out.*``), any file name.
    heights_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm], increasing; default :func:`~radynversion.atmosphere.default_height_grid`.
    times : sequence of float, optional
        Times [s]; for each, the nearest stored step is taken (``time_s`` holds the step's own
        time). Default: every step.
    add_continuum : bool
        Add ``outint[nu=0]`` (the continuum point) to the line points, as the original
        Radynversion export did (default, so imports match the original training data and the
        original pickle). False takes ``outint[nu=1..nq]`` alone, as radynpy's
        ``LineProfiles`` does.

    Returns
    -------
    xr.Dataset
        ``I_halpha (sample, wl_halpha)``, ``I_ca8542 (sample, wl_ca8542)`` on RADYN's own line
        frequencies [erg s^-1 cm^-2 Hz^-1 sr^-1, air Angstrom, increasing] at the ray nearest
        disk centre; ``log_ne`` [log10 cm^-3], ``log_T`` [log10 K], ``v`` [km/s, positive =
        downflow] ``(sample, height)``; ``status``, ``message``, ``kind (sample)``; coordinates
        ``time_s``, ``time_index``, ``run``, ``source (sample)``.

    Raises
    ------
    DataFileError
        The file is missing, not a CDF, truncated, lacks a variable, or has no H-alpha or
        Ca II 8542 transition.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file; expected RADYN CDF output")
    h = _check_heights(heights_Mm)
    data, names, reader = _open_radyn(path)

    def var(name: str, required: bool = True) -> np.ndarray | None:
        return _radyn_var(data, names, name, path, required)

    time_name = "time" if "time" in names or "timet" not in names else "timet"
    t_all = np.atleast_1d(var(time_name)).astype(float)
    nt = t_all.size
    z1 = _time_series(var("z1"), nt, 2, "z1", path).astype(float)
    cols = {name: _time_series(var(name), nt, 2, name, path).astype(float) for name in ("tg1", "ne1", "vz1")}
    for name, arr in cols.items():
        if arr.shape != z1.shape:
            raise DataFileError(f"{path}: RADYN variable {name!r} has shape {arr.shape}; expected the "
                                f"shape of 'z1' {z1.shape}")

    if times is None:
        steps = np.arange(nt)
    else:
        want = np.atleast_1d(np.asarray(times, dtype=float))
        steps = np.abs(t_all[np.newaxis, :] - want[:, np.newaxis]).argmin(axis=1)
    n = steps.size
    if n == 0:
        raise DataFileError(f"{path}: no time steps selected; expected 'time' to hold at least one step")

    # ---- atmosphere on the node grid, per time step (the RADYN grid moves)
    h_cm = h * _CM_PER_MM
    log_T = np.empty((n, h.size))
    log_ne = np.empty((n, h.size))
    v = np.empty((n, h.size))
    status = np.zeros(n, dtype=np.int8)
    messages = [""] * n
    lt_all, bad_T = _log10_positive(cols["tg1"][steps])
    ln_all, bad_ne = _log10_positive(cols["ne1"][steps])
    for i, t in enumerate(steps):
        z = z1[t]
        log_T[i], outside = _interp_column(h_cm, z, lt_all[i])
        log_ne[i], _ = _interp_column(h_cm, z, ln_all[i])
        vz, _ = _interp_column(h_cm, z, cols["vz1"][t])
        v[i] = 0.0 - vz / _CM_S_PER_KM_S  # vz1 negated: RADYN positive = upflow, ours positive = downflow
        if bad_T[i] or bad_ne[i]:
            status[i] = 2
            messages[i] = f"RADYN step {t}: non-positive or non-finite {'tg1' if bad_T[i] else 'ne1'}"
        elif outside:
            messages[i] = (f"{outside} of {h.size} nodes outside the RADYN column "
                           f"[{z.min() / _CM_PER_MM:.3f}, {z.max() / _CM_PER_MM:.3f}] Mm: end values held")

    # ---- line profiles
    alamb = np.atleast_1d(var("alamb")).astype(float)
    nrad = alamb.size
    nq = np.atleast_1d(var("nq")).astype(int)
    q = np.asarray(var("q"), dtype=float)
    if q.ndim == 1 and nrad == 1:
        q = q[:, np.newaxis]
    qnorm = float(np.asarray(var("qnorm")).item())
    cc_arr = var("cc", required=False)
    cc = float(np.asarray(cc_arr).item()) if cc_arr is not None else _C_CGS
    cont = var("cont", required=False)
    ind = var("ind", required=False)
    mu_name = "zmu" if "zmu" in names or "xmu" not in names else "xmu"
    mus = np.atleast_1d(var(mu_name)).astype(float)
    imu = int(np.argmax(mus))
    outint = _time_series(var("outint"), nt, 4, "outint", path)
    if q.ndim != 2 or q.shape[1] != nrad or nq.size != nrad:
        raise DataFileError(f"{path}: RADYN variables 'q' {q.shape} and 'nq' {nq.shape} do not match "
                            f"'alamb' ({nrad} transitions); expected q (nu, kr) and nq (kr,)")
    if outint.shape[2] != mus.size or outint.shape[3] != nrad:
        raise DataFileError(f"{path}: RADYN variable 'outint' has shape {outint.shape}; expected "
                            f"(t, nu, mu={mus.size}, kr={nrad})")

    wavelengths: dict[str, np.ndarray] = {}
    intensities: dict[str, np.ndarray] = {}
    line_attrs: dict[str, Any] = {}
    for ln in LINES:
        kr, medium = _select_transition(alamb, cont, ln, path)
        k = int(nq[kr])
        if k < 2 or q.shape[0] < k or outint.shape[1] < k + 1:
            raise DataFileError(f"{path}: transition kr={kr} ({ln.label}) has nq={k} but 'q' has "
                                f"{q.shape[0]} and 'outint' {outint.shape[1]} frequency slots; "
                                "expected q[0:nq] and outint[1:nq+1]")
        qk = q[:k, kr]
        prof = np.asarray(outint[steps, 1:k + 1, imu, kr], dtype=float)
        if add_continuum:
            prof = prof + np.asarray(outint[steps, 0, imu, kr], dtype=float)[:, np.newaxis]
        mirrored = ind is not None and int(np.atleast_1d(ind)[kr]) == 1 and np.all(qk >= 0)
        if mirrored:  # one-sided quadrature: symmetric profile, q >= 0 stored
            pos = qk > 0
            qk = np.concatenate([-qk[pos], qk])
            prof = np.concatenate([prof[:, pos], prof], axis=1)
        wl = alamb[kr] / (qk * qnorm * _CM_S_PER_KM_S / cc + 1.0)
        wl_air = vacuum_to_air(wl) if medium == "vacuum" else wl
        order = np.argsort(wl_air, kind="stable")
        wl_air = wl_air[order]
        if np.any(np.diff(wl_air) <= 0):
            raise DataFileError(f"{path}: transition kr={kr} ({ln.label}) has repeated frequencies in "
                                "'q'; expected distinct q[0:nq]")
        wavelengths[ln.key] = wl_air
        intensities[ln.key] = prof[:, order]
        line_attrs[f"kr_{ln.key}"] = kr
        line_attrs[f"alamb_{ln.key}"] = float(alamb[kr])
        line_attrs[f"alamb_medium_{ln.key}"] = medium
        if mirrored:
            line_attrs[f"mirrored_{ln.key}"] = "one-sided quadrature (ind = 1): profile mirrored about q = 0"

    conversions = [
        "z1 [cm] -> height [Mm] (/1e8); tg1, ne1 interpolated in log10 and vz1 linearly onto the "
        "node heights at every time step",
        "vz1 negated: RADYN positive = upflow; v = -vz1 / 1e5 km/s (positive = downflow)",
        f"intensity = outint[t, nu=1..nq, mu={imu}, kr] in {RADYN_INTENSITY_UNIT}"
        + (" + outint[t, nu=0] (continuum added)" if add_continuum else " (full intensity; continuum point nu=0 not added)"),
        "wavelength = alamb / (1 + q qnorm 1e5 / cc) in alamb's medium (vacuum for RADYN), "
        "converted to air (Morton 2000) and sorted increasing",
    ]
    attrs = {
        "source_file": str(path),
        "reader": reader,
        "mu": float(mus[imu]),
        "qnorm_km_s": qnorm,
        "add_continuum": int(bool(add_continuum)),
        "conversions": "; ".join(conversions),
        "conventions": _CONVENTIONS % float(mus[imu]),
        **line_attrs,
    }
    ds = _assemble(
        wavelengths_air=wavelengths, intensities=intensities, unit=RADYN_INTENSITY_UNIT,
        log_ne=log_ne, log_T=log_T, v=v, heights_Mm=h, status=status, messages=messages,
        time_s=t_all[steps], time_index=steps, run=np.zeros(n, dtype=int), source=path.name, attrs=attrs,
    )
    validate_profiles(ds, source=str(path))
    return ds


# --------------------------------------------------------------------------------------------
# the original Radynversion pickle
# --------------------------------------------------------------------------------------------


def _safe_load_storage(b: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


class _AllowlistUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, torch tensors and plain containers; refuses any other global."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch._tensor", "Tensor"),
        ("torch", "Tensor"),
        ("torch", "Size"),
        ("torch", "device"),
    }

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _safe_load_storage
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module == "torch":
            import torch

            if isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
        raise DataFileError(
            f"{self._path}: the pickle refers to {module}.{name}, which is not part of the Radynversion "
            "training pickle (numpy/torch arrays in a dict); refusing to unpickle it")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _stack(x: Any, key: str, path: Path, ndim: int = 2) -> np.ndarray:
    """A per-sample entry (list of 1D tensors/arrays, or one array) as float64 ``(n, ...)``."""
    try:
        arr = np.stack([_to_numpy(r) for r in x]) if isinstance(x, (list, tuple)) else _to_numpy(x)
        arr = np.asarray(arr, dtype=float)
    except (ValueError, TypeError) as err:
        raise DataFileError(f"{path}: pickle entry {key!r} cannot be stacked into an array ({err}); "
                            "expected one equal-length profile per sample") from None
    if arr.ndim != ndim:
        raise DataFileError(f"{path}: pickle entry {key!r} has shape {arr.shape}; expected {ndim} dims "
                            "(sample, ...)")
    return arr


def read_radynversion_pickle(path: str | Path, intensity_unit: str | None = None) -> xr.Dataset:
    """Read the original Radynversion training pickle (a dict of per-sample profiles).

    Parameters
    ----------
    path : path
        The pickle, with keys ``ne`` [cm^-3], ``temperature`` [K], ``vel`` [cm/s, positive up]
        (each ``(n, H)`` or a list of ``n`` arrays of ``(H,)``), ``z`` ``(H,)`` [cm], ``line``
        (two ``(n, W_i)`` profiles) and ``wavelength`` (two ``(W_i,)`` grids, vacuum Angstrom).
    intensity_unit : str, optional
        Units of ``line``; default ``erg / (s cm2 sr Angstrom)`` (what the original export
        wrote), checked against the magnitude of the H-alpha values.

    Returns
    -------
    xr.Dataset
        As :func:`read_radyn_cdf`, with the pickle's heights, the pickle's wavelength windows
        (air, increasing) and ``time_s`` NaN (the pickle has no times; ``run`` and
        ``time_index`` come from its ``nTime`` when present).

    Raises
    ------
    DataFileError
        The file is missing, not a pickle, truncated, holds foreign objects, or lacks a key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file; expected the original Radynversion training pickle")
    try:
        with open(path, "rb") as f:
            d = _AllowlistUnpickler(f, path).load()
    except DataFileError:
        raise
    except ModuleNotFoundError as err:
        raise DataFileError(f"{path}: the pickle needs the module {err.name!r} to load; expected numpy "
                            "arrays or torch tensors") from None
    except Exception as err:  # noqa: BLE001 - UnpicklingError, EOFError, ValueError, ...
        raise DataFileError(f"{path}: not a readable pickle ({type(err).__name__}: {err}); the file looks "
                            "truncated or is not the Radynversion training pickle") from None
    if not isinstance(d, Mapping):
        raise DataFileError(f"{path}: the pickle holds a {type(d).__name__}; expected a dict with keys "
                            "ne, temperature, vel, z, line, wavelength")
    missing = [k for k in ("ne", "temperature", "vel", "z", "line", "wavelength") if k not in d]
    if missing:
        raise DataFileError(f"{path}: pickle lacks {missing}; expected the Radynversion training layout "
                            "(ne, temperature, vel, z, line, wavelength)")

    ne = _stack(d["ne"], "ne", path)
    temp = _stack(d["temperature"], "temperature", path)
    vel = _stack(d["vel"], "vel", path)
    n, nh = ne.shape
    for key, arr in (("temperature", temp), ("vel", vel)):
        if arr.shape != ne.shape:
            raise DataFileError(f"{path}: pickle entry {key!r} has shape {arr.shape}; expected the shape "
                                f"of 'ne' {ne.shape}")
    z = np.asarray(_to_numpy(d["z"]), dtype=float).ravel()
    if z.size != nh:
        raise DataFileError(f"{path}: pickle entry 'z' has {z.size} heights; expected {nh} (the profiles' length)")
    # the export wrote cm (-6.5e6 ... 1.05e9); a grid that already looks like Mm is taken as Mm
    z_unit = "cm" if np.nanmax(np.abs(z)) > 1.0e4 else "Mm"
    h = z / _CM_PER_MM if z_unit == "cm" else z
    default = default_height_grid()
    if h.size == default.size and np.allclose(h, default, rtol=0, atol=1e-4):
        h = default  # float32 round-off of the same grid
    h = _check_heights(h)

    lines, wls = d["line"], d["wavelength"]
    if not isinstance(lines, (list, tuple)) or not isinstance(wls, (list, tuple)) or len(lines) != len(wls):
        raise DataFileError(f"{path}: pickle entries 'line' and 'wavelength' must be lists of equal length "
                            "(one per line: H-alpha, Ca II 8542)")
    found: dict[str, tuple[int, str]] = {}
    grids = [np.asarray(_to_numpy(w), dtype=float).ravel() for w in wls]
    for ln in LINES:
        for i, wl in enumerate(grids):
            medium = _line_medium(0.5 * (np.nanmin(wl) + np.nanmax(wl)), ln) if wl.size else None
            if medium is not None:
                found[ln.key] = (i, medium)
                break
        else:
            spans = ", ".join(f"{np.nanmin(w):.2f}-{np.nanmax(w):.2f}" for w in grids if w.size)
            raise DataFileError(f"{path}: no 'wavelength' grid centres on {ln.label} "
                                f"({ln.center_vacuum_A:.2f} A vacuum / {ln.center_air_A:.2f} A air); found {spans} A")
    wavelengths: dict[str, np.ndarray] = {}
    intensities: dict[str, np.ndarray] = {}
    for ln in LINES:
        i, medium = found[ln.key]
        wl = grids[i]
        prof = _stack(lines[i], f"line[{i}]", path)
        if prof.shape != (n, wl.size):
            raise DataFileError(f"{path}: pickle entry 'line[{i}]' ({ln.label}) has shape {prof.shape}; "
                                f"expected ({n}, {wl.size}) to match 'ne' and 'wavelength[{i}]'")
        air = vacuum_to_air(wl) if medium == "vacuum" else wl
        order = np.argsort(air, kind="stable")
        wavelengths[ln.key] = air[order]
        intensities[ln.key] = prof[:, order]

    unit = PICKLE_INTENSITY_UNIT if intensity_unit is None else intensity_unit
    if intensity_unit is None:
        med = float(np.nanmedian(intensities["halpha"]))
        # solar per-Angstrom CGS intensities near H-alpha are ~1e5-1e7; per-Hz ones ~1e-5
        if not med > 1.0:
            raise DataFileError(
                f"{path}: H-alpha profiles have median {med:.3g}, not the ~1e6 of erg / (s cm2 sr Angstrom) "
                "that the original export wrote (normalised or per-Hz values?); pass intensity_unit")

    log_ne, bad_ne = _log10_positive(ne)
    log_T, bad_T = _log10_positive(temp)
    v = 0.0 - vel / _CM_S_PER_KM_S  # vel is RADYN vz1 [cm/s, positive up]
    status = np.where(bad_ne | bad_T, 2, 0).astype(np.int8)
    messages = ["non-positive or non-finite ne or temperature" if s else "" for s in status]

    run = np.zeros(n, dtype=int)
    time_index = np.arange(n)
    n_time = d.get("nTime")
    if n_time is not None:
        counts = np.asarray(n_time, dtype=int).ravel()
        if counts.sum() == n and np.all(counts > 0):
            run = np.repeat(np.arange(counts.size), counts)
            time_index = np.concatenate([np.arange(c) for c in counts])
    mu = d.get("mu")  # the export stored the mu of each line (the same ray)
    if isinstance(mu, (list, tuple)):
        mu = mu[0] if mu else None
    try:
        mu_val = float(np.asarray(_to_numpy(mu), dtype=float).ravel()[0])
    except (TypeError, ValueError, IndexError):
        mu_val = float("nan")
    conversions = [
        f"z [{z_unit}] -> height [Mm]",
        "ne [cm^-3], temperature [K] -> log10",
        "vel is RADYN vz1 in cm/s, positive = upflow: v = -vel / 1e5 km/s (positive = downflow)",
        f"line kept as stored, in {unit}"
        + (" (the original export added the continuum point outint[nu=0] to outint[nu=1..nq] and "
           "multiplied by cc 1e8 / wl^2)" if intensity_unit is None else " (unit given by the caller)"),
        "wavelength: " + ", ".join(f"{ln.key} {found[ln.key][1]}" for ln in LINES)
        + " -> air (Morton 2000), sorted increasing",
    ]
    attrs = {
        "source_file": str(path),
        "reader": "radynversion pickle (allowlist unpickler)",
        "mu": mu_val,
        "continuum_added": int(intensity_unit is None),
        "conversions": "; ".join(conversions),
        "conventions": _CONVENTIONS % mu_val,
    }
    ds = _assemble(
        wavelengths_air=wavelengths, intensities=intensities, unit=unit,
        log_ne=log_ne, log_T=log_T, v=v, heights_Mm=h, status=status, messages=messages,
        time_s=np.full(n, np.nan), time_index=time_index, run=run, source=path.name, attrs=attrs,
    )
    validate_profiles(ds, source=str(path))
    return ds


# --------------------------------------------------------------------------------------------
# import: dispatch, harmonise, concatenate, write
# --------------------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    """``"cdf"`` or ``"pickle"`` from the suffix, else from the first bytes."""
    if not path.is_file():
        raise DataFileError(f"{path}: no such file; expected a RADYN CDF file or the Radynversion pickle")
    suffix = path.suffix.lower()
    if suffix == ".cdf":
        return "cdf"
    if suffix in (".pickle", ".pkl"):
        return "pickle"
    with open(path, "rb") as f:
        head = f.read(4)
    if head in _CDF_MAGIC:  # RADYN names its output radyn_out.<params>, without .cdf
        return "cdf"
    if head[:1] == b"\x80":  # pickle protocol >= 2
        return "pickle"
    raise DataFileError(f"{path}: neither a CDF file nor a pickle (first bytes {head.hex() or 'empty'}); "
                        "expected RADYN CDF output or the original Radynversion training pickle")


def _onto_grid(ds: xr.Dataset, ref: xr.Dataset, path: str) -> tuple[xr.Dataset, bool]:
    """``ds`` with every line on ``ref``'s wavelengths (linear interpolation, no extrapolation)."""
    changed = False
    out = ds
    for ln in LINES:
        have = ds[ln.dim].values
        want = ref[ln.dim].values
        if have.shape == want.shape and np.allclose(have, want, rtol=0, atol=1e-6):
            out = out.assign_coords({ln.dim: ref[ln.dim]})
            continue
        if not spans(have, want):
            raise DataFileError(
                f"{path}: {ln.var} spans {span_text(have)} (air), narrower than the first file's "
                f"{span_text(want)}; cannot interpolate without extrapolating (list the file with the "
                "narrowest windows first, or import it separately)")
        vals = np.asarray(ds[ln.var].values, dtype=float)
        new = np.stack([np.interp(want, have, row) for row in vals]).astype(np.float32)
        attrs = dict(ds[ln.var].attrs)
        out = out.drop_vars([ln.var, ln.dim])
        out = out.assign_coords({ln.dim: ref[ln.dim]})
        out[ln.var] = (("sample", ln.dim), new, attrs)
        changed = True
    return out, changed


def import_radyn(
    files: Iterable[str | Path],
    out: str | Path | None = None,
    heights_Mm: np.ndarray | None = None,
    add_continuum: bool = True,
) -> xr.Dataset:
    """Import RADYN CDF files and/or original Radynversion pickles as one training set.

    Parameters
    ----------
    files : iterable of path
        ``.cdf`` (or any file starting with a CDF magic number, e.g. ``radyn_out.*``) and
        ``.pickle``/``.pkl`` files, in order.
    out : path, optional
        Write the result here as a Zarr (format 2) store; it must not exist.
    heights_Mm : ndarray, shape ``(H,)``, optional
        Node heights [Mm] for CDF files; default :func:`~radynversion.atmosphere.default_height_grid`,
        or the first file's heights when the first file is a pickle.
    add_continuum : bool
        For CDF files: add the continuum point to the line intensities as the original
        export did (default); see :func:`read_radyn_cdf`.

    Returns
    -------
    xr.Dataset
        The training-set layout (see :func:`read_radyn_cdf`), concatenated along ``sample``
        (renumbered ``0..n-1``). Every file is put on the first file's heights (a pickle on other
        heights is an error), intensity unit (converted with
        :func:`radynversion.schema.convert_intensity`) and wavelength grids (later files are
        linearly interpolated; a later file whose window does not cover the first file's is an
        error, nothing is extrapolated).

    Raises
    ------
    DataFileError
        A file is missing, unreadable, truncated, of an unknown kind, on other heights, or
        narrower in wavelength than the first file.
    StoreError
        ``out`` already exists.
    """
    paths = [Path(p) for p in files]
    if not paths:
        raise DataFileError("import-radyn: no files given; expected RADYN CDF files or Radynversion pickles")
    if out is not None and Path(out).exists():
        raise StoreError(f"{out}: exists; choose another --out or remove it")
    kinds = [_file_kind(p) for p in paths]  # fail fast, before the slow reads

    parts: list[xr.Dataset] = []
    log: list[str] = []
    interpolated: list[str] = []
    heights = None if heights_Mm is None else _check_heights(heights_Mm)
    for path, kind in zip(paths, kinds, strict=True):
        ds = read_radyn_cdf(path, heights_Mm=heights, add_continuum=add_continuum) if kind == "cdf" else read_radynversion_pickle(path)
        if parts:
            ref = parts[0]
            if ds.sizes["height"] != ref.sizes["height"] or not np.allclose(
                    ds["height"].values, ref["height"].values, rtol=0, atol=1e-4):
                raise DataFileError(f"{path}: node heights differ from the first file's ({ds.sizes['height']} vs "
                                    f"{ref.sizes['height']} nodes); expected the same height grid")
            ds = ds.assign_coords(height=ref["height"])
            unit = ref[LINES[0].var].attrs["units"]
            if any(ds[ln.var].attrs["units"] != unit for ln in LINES):
                ds = convert_intensity(ds, unit, source=str(path))
            ds, changed = _onto_grid(ds, ref, str(path))
            if changed:
                interpolated.append(path.name)
        elif heights is None:
            heights = ds["height"].values
        log.append(f"{path.name}: {ds.sizes['sample']} samples via {ds.attrs.get('reader')}; "
                   f"{ds.attrs.get('conversions')}")
        parts.append(ds)

    first = parts[0]
    result = xr.concat(parts, dim="sample", data_vars="all", coords="different", compat="equals",
                       join="exact", combine_attrs="override") if len(parts) > 1 else first.copy()
    result = result.assign_coords(sample=("sample", np.arange(result.sizes["sample"])))
    from .._version import __version__

    mus = sorted({float(p.attrs.get("mu", np.nan)) for p in parts if np.isfinite(p.attrs.get("mu", np.nan))})
    result.attrs = {
        "radynversion_store": STORE_KIND,
        "radynversion_version": __version__,
        "source_files": [str(p) for p in paths],
        "import_log": log,
        "wavelengths_interpolated_from": interpolated,
        "conventions": "v positive = downflow = redshift; wavelengths air Angstrom; intensity at mu = "
        + (", ".join(f"{m:g}" for m in mus) if mus else "unknown"),
        "conversions": first.attrs.get("conversions", ""),
    }
    for ln in LINES:
        result[ln.dim].attrs.setdefault("long_name", f"{ln.label} wavelength (air)")
    result["height"].attrs.update(VARIABLE_ATTRS["height"])
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            result.to_zarr(out, mode="w-", zarr_format=2, consolidated=True)
        except OSError as err:
            raise StoreError(f"{out}: cannot write the Zarr store ({type(err).__name__}: {err})") from None
    return result
