"""La Palma ("LP") cubes, the format CRISPEX reads: SST/CRISP data reduced with CRISPRED, from
2008 until SSTRED's FITS cubes replaced them (about 2018), and most archived CRISP flare data.

A cube file (``.icube`` int16, ``.fcube`` float32, ``.bcube`` bytes) is a 512-byte ASCII header,
e.g. ``datatype=2 (integer), dims=3, nx=960, ny=960, nt=600, endian=l`` with ``stokes=[I,Q,U,V],
ns=4`` for polarimetric cubes, then the frames in Fortran order ``(nx, ny, nt)``: the frame index
runs over the tunings fastest, then Stokes, then scans, so numpy sees ``(nscan, ns, nw, ny, nx)``
(the layout ISPy's ``ISPy.io.lapalma`` and CRISPEX read). The file holds neither wavelengths,
units, times nor pointing:

* the tunings come from the CRISPEX *spectfile*, an IDL save file with ``spect_pos`` [Angstrom],
  named ``spectfile.<line>.idlsave`` beside the cube (``<line>`` = 6563 or 8542). Its values are
  absolute air wavelengths or offsets from the line centre (both are in use); offsets are taken
  from the air rest wavelength of the line named in the file names (6563/6562 or 8542);
* the intensities are taken as uncalibrated (``units = 'DN'``), which selects the model variant
  for uncalibrated data; pass ``units=`` when the cube is calibrated;
* scans have no times (the ``time`` dim has no coordinate: scans pair by index), and pixels no
  helioprojective coordinates.

:func:`write_lapalma_cube` writes such a cube and its spectfile (for tests and examples).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, DataFileError, ProfileSchemaError
from ..lines import LINES, Line
from .fits import STOKES_CODES, identify_line

__all__ = ["read_lapalma_cube", "read_spectfile", "write_lapalma_cube", "is_lapalma_cube",
           "is_idl_save", "find_spectfile", "pair_spectfiles", "LAPALMA_SUFFIXES"]

LAPALMA_SUFFIXES = (".icube", ".fcube", ".bcube", ".cube")
_HEADER_BYTES = 512
_DTYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8"}
_TYPE_NAMES = {"u1": "(byte)", "i2": "(integer)", "i4": "(long)", "f4": "(float)", "f8": "(double)"}
_IDL_MAGIC = (b"SR\x00\x04", b"SR\x00\x06")
#: a line named in a file name: CRISP's line labels
_LINE_TOKEN = re.compile(r"(?<!\d)(6562|6563|8542)(?!\d)")


@dataclass(frozen=True)
class LapalmaHeader:
    """The parsed 512-byte header of an LP cube: numpy dtype (with byte order), the Fortran-order
    shape ``(nx, ny, nt)`` and the Stokes parameters (``('I',)`` unless the header lists them)."""

    dtype: np.dtype
    nx: int
    ny: int
    nt: int
    stokes: tuple[str, ...]
    text: str


def is_lapalma_cube(path: str | Path) -> bool:
    """Whether ``path`` starts like an LP cube header (``datatype=`` within its first 512 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_BYTES)
    except OSError:
        return False
    return b"datatype=" in head.lower() and b"nx=" in head.lower()


def is_idl_save(path: str | Path) -> bool:
    """Whether ``path`` is an IDL save file (such as a CRISPEX spectfile)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in _IDL_MAGIC
    except OSError:
        return False


def _header(path: Path) -> LapalmaHeader:
    src = str(path)
    with open(path, "rb") as f:
        raw = f.read(_HEADER_BYTES)
    if len(raw) < _HEADER_BYTES:
        raise DataFileError(f"{src}: {len(raw)} bytes, shorter than the 512-byte header of a La Palma "
                            "cube; expected an .icube/.fcube file")
    text = raw.split(b"\x00")[0].decode("latin1").strip()
    fields = {k.lower(): v.strip() for k, v in re.findall(r"(\w+)\s*=\s*([^,:\]\[]+)", text)}
    try:
        code = int(fields["datatype"].split()[0])
        dims = int(fields["dims"])
        nx, ny = int(fields["nx"]), int(fields["ny"])
        nt = int(fields.get("nt", "1").split()[0]) if dims == 3 else 1
    except (KeyError, ValueError):
        raise DataFileError(f"{src}: La Palma header {text[:120]!r} lacks datatype, dims, nx or ny; "
                            "expected e.g. 'datatype=2 (integer), dims=3, nx=.., ny=.., nt=.., endian=l'") from None
    if code not in _DTYPES or dims not in (2, 3) or min(nx, ny, nt) < 1:
        raise DataFileError(f"{src}: La Palma header has datatype={code}, dims={dims}, nx={nx}, ny={ny}, "
                            f"nt={nt}; expected datatype 1-5, dims 2 or 3 and positive sizes")
    endian = fields.get("endian", "l").strip().lower()[:1]
    dtype = np.dtype(("<" if endian != "b" else ">") + _DTYPES[code])
    m = re.search(r"stokes\s*=\s*\[([^\]]*)\]", text, flags=re.IGNORECASE)
    stokes = tuple(s.strip().upper() for s in m.group(1).split(",") if s.strip()) if m else ("I",)
    need = _HEADER_BYTES + nx * ny * nt * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise DataFileError(f"{src}: {size} bytes, but the header ({nx} x {ny} x {nt} {dtype.name}) needs "
                            f"{need}; expected a complete cube (truncated copy?)")
    return LapalmaHeader(dtype, nx, ny, nt, stokes, text)


def read_spectfile(path: str | Path) -> np.ndarray:
    """The tunings of a CRISPEX spectfile: its ``spect_pos`` (shape ``(W,)``, as stored: absolute
    wavelengths or offsets from the line centre, normally Angstrom).

    Raises
    ------
    DataFileError
        Not an IDL save file, or unreadable.
    ProfileSchemaError
        No ``spect_pos``, or not a finite 1D array.
    """
    from scipy.io import readsav

    src = str(path)
    if not Path(path).is_file():
        raise DataFileError(f"{src}: no such file; expected a CRISPEX spectfile (IDL save with spect_pos)")
    if not is_idl_save(path):
        raise DataFileError(f"{src}: not an IDL save file; expected a CRISPEX spectfile (IDL save with spect_pos)")
    try:
        content = readsav(src, verbose=False)
    except Exception as err:  # noqa: BLE001 - scipy raises bare Exceptions for damaged files
        raise DataFileError(f"{src}: unreadable IDL save file ({type(err).__name__}: {err}); expected a "
                            "CRISPEX spectfile") from None
    if "spect_pos" not in content:
        raise ProfileSchemaError(f"{src}: no spect_pos (it holds {sorted(content)}); expected a CRISPEX "
                                 "spectfile with the tunings in spect_pos")
    pos = np.asarray(content["spect_pos"], dtype=float).ravel()
    if pos.size == 0 or not np.all(np.isfinite(pos)):
        raise ProfileSchemaError(f"{src}: spect_pos is empty or not finite; expected the tuning wavelengths")
    return pos


def _line_named_in(*names: str) -> Line | None:
    keys = {m for n in names for m in _LINE_TOKEN.findall(Path(n).name)}
    lines = {ln.key: ln for ln in LINES for k in keys if abs(ln.center_air_A - float(k)) < 1.0}
    return next(iter(lines.values())) if len(lines) == 1 else None


def _tunings(pos: np.ndarray, line: Line | None, source: str) -> tuple[np.ndarray, Line, str, str]:
    """Absolute wavelengths [Angstrom], the line, the medium and how ``spect_pos`` was read."""
    med, span, big = float(np.median(pos)), float(np.ptp(pos)), float(np.max(np.abs(pos)))
    if med > 3000:
        found, medium = identify_line(pos, source)
        return pos, found, medium, "absolute wavelengths [Angstrom]"
    if 300 < med < 1100 and span < 1.0:
        found, medium = identify_line(pos * 10, source)
        return pos * 10, found, medium, "absolute wavelengths [nm]"
    if big < 10:
        scale, how = 1.0, "offsets from the line centre [Angstrom]"
    elif big < 10000 and span >= 50:
        scale, how = 1e-3, "offsets from the line centre [mA]"
    else:
        raise ProfileSchemaError(f"{source}: spect_pos spans {pos.min():g} to {pos.max():g}, neither wavelengths "
                                 "nor offsets from a line centre; expected Angstrom (absolute or offsets)")
    if line is None:
        raise ProfileSchemaError(f"{source}: spect_pos holds offsets ({pos.min():g} to {pos.max():g}) but no file "
                                 "name says which line (6563 or 8542); expected the line in the cube's or "
                                 "spectfile's name (crispex.6563.icube, spectfile.6563.idlsave), or line=")
    return line.center_air_A + pos * scale, line, "air", how + f" of {line.label} (air)"


def find_spectfile(cube: str | Path) -> Path:
    """The CRISPEX spectfile of ``cube``: ``spectfile.<line>.idlsave`` beside it for the line in its
    name, else the one IDL save file there whose name has that line (or the only one)."""
    cube = Path(cube)
    line = _line_named_in(cube.name)
    folder = cube.parent
    saves = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".idlsave", ".sav") and p.is_file())
    if line is not None:
        token = str(int(round(line.center_air_A)))
        exact = [p for p in saves if p.name.lower() == f"spectfile.{token}.idlsave"]
        named = exact or [p for p in saves if "spect" in p.name.lower() and _line_named_in(p.name) is line]
        if len(named) == 1:
            return named[0]
    spect = [p for p in saves if "spect" in p.name.lower()]
    if len(spect) == 1 and (line is None or _line_named_in(spect[0].name) in (None, line)):
        return spect[0]
    raise DataFileError(f"{cube}: no CRISPEX spectfile found beside it ({len(spect)} candidates); expected "
                        "spectfile.6563.idlsave or spectfile.8542.idlsave in its folder, or the spectfile "
                        "given with the cube")


def pair_spectfiles(cubes: list[Path], spectfiles: list[Path]) -> dict[Path, Path]:
    """Each La Palma cube's spectfile among those given with it (matched by the line in the file
    names; one of each pairs as it is); cubes left out find theirs with :func:`find_spectfile`.

    Raises
    ------
    DataFileError
        A spectfile without a cube, two spectfiles for one line, or one matching no cube.
    """
    if spectfiles and not cubes:
        raise DataFileError(f"{spectfiles[0]}: a CRISPEX spectfile given without a La Palma cube; expected "
                            "it with its .icube/.fcube")
    if len(cubes) == 1 and len(spectfiles) == 1:
        return {cubes[0]: spectfiles[0]}
    pairs: dict[Path, Path] = {}
    for cube in cubes:
        line = _line_named_in(cube.name)
        match = [s for s in spectfiles if line is not None and _line_named_in(s.name) is line]
        if len(match) > 1:
            raise DataFileError(f"{cube}: {len(match)} spectfiles given for its line ({', '.join(map(str, match))}); "
                                "expected one")
        if match:
            pairs[cube] = match[0]
    unused = [s for s in spectfiles if s not in pairs.values()]
    if unused:
        raise DataFileError(f"{unused[0]}: no La Palma cube given names the same line (6563 or 8542); "
                            "expected the line in both file names, e.g. crispex.6563.icube and spectfile.6563.idlsave")
    return pairs


class _LazyCube:
    """Array-like ``(nscan, ns, nw, ny, nx)`` view of an LP cube that maps the file for each read
    (picklable for dask: no open memmap travels to workers)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.shape, self.dtype, self.ndim = str(path), shape, dtype, len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=_HEADER_BYTES, shape=self.shape)
        return np.array(mm[key], dtype=self.dtype.newbyteorder("="))


def read_lapalma_cube(
    path: str | Path,
    spectfile: str | Path | None = None,
    stokes: str = "I",
    chunks: Any = None,
    line: str | Line | None = None,
    units: str = "DN",
) -> xr.Dataset:
    """Read one line's La Palma (CRISPEX) cube into the profile schema.

    Parameters
    ----------
    path : str or Path
        ``.icube`` / ``.fcube`` file (see the module docstring for the layout).
    spectfile : str or Path, optional
        Its CRISPEX spectfile; found beside the cube by :func:`find_spectfile` when omitted.
    stokes : {"I", "Q", "U", "V"}
        Stokes parameter taken from a polarimetric cube.
    chunks : None, int, "auto" or mapping of dim -> size
        None reads the selected Stokes parameter into memory; anything else returns dask arrays
        (one scan per chunk, then rechunked to ``chunks``) that read the file on compute.
    line : {"halpha", "ca8542"} or Line, optional
        The line, when neither the file names nor absolute ``spect_pos`` say.
    units : str
        Intensity unit (LP cubes carry none): ``'DN'`` (uncalibrated) unless you know better.

    Returns
    -------
    xarray.Dataset
        ``I_<key>([time,] wl_<key>, y, x)`` (a ``time`` dim, without coordinate, when the cube
        holds more than one scan); ``wl_<key>`` [Angstrom] with ``wavelength_medium``; ``y``, ``x``
        pixel indices; attrs ``source_files`` (cube, spectfile), ``reader = 'lapalma'``,
        ``line``, ``stokes``, ``lapalma_header``, ``spect_pos_read_as``.

    Raises
    ------
    DataFileError
        Missing, truncated or foreign files; no spectfile.
    ProfileSchemaError
        Frame count not a multiple of tunings x Stokes, tunings of no known line, duplicate tunings.

    Example
    -------
    >>> ds = read_lapalma_cube("crispex.stokes.8542.14:17:56.time_corrected.icube")  # doctest: +SKIP
    >>> ds.I_ca8542.dims  # doctest: +SKIP
    ('time', 'wl_ca8542', 'y', 'x')
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise DataFileError(f"{src}: no such file; expected a La Palma cube (.icube/.fcube)")
    stokes = stokes.upper()
    if stokes not in STOKES_CODES:
        raise ConfigError(f"{src}: stokes = {stokes!r}; expected one of {list(STOKES_CODES)}")
    hdr = _header(path)
    spect = Path(spectfile) if spectfile is not None else find_spectfile(path)
    pos = read_spectfile(spect)
    if isinstance(line, str):
        named = next((ln for ln in LINES if ln.key == line), None)
        if named is None:
            raise ConfigError(f"{src}: line = {line!r}; expected one of {[ln.key for ln in LINES]}")
        line = named
    hint = line or _line_named_in(path.name, spect.name)
    wl, found, medium, how = _tunings(pos, hint, str(spect))
    if line is not None and found is not line:
        raise ProfileSchemaError(f"{spect}: spect_pos is {found.label}, but line={line.key} was asked for; "
                                 "expected the spectfile of that line")
    nw, ns = pos.size, len(hdr.stokes)
    if hdr.nt % (nw * ns):
        raise ProfileSchemaError(f"{src}: {hdr.nt} frames are not a whole number of scans of {nw} tunings "
                                 f"(from {spect.name}) x {ns} Stokes; expected the spectfile of this cube")
    nscan = hdr.nt // (nw * ns)
    if stokes not in hdr.stokes:
        raise ProfileSchemaError(f"{src}: Stokes {stokes} not in the cube (it has {list(hdr.stokes)}); "
                                 f"expected Stokes {stokes}")
    s = hdr.stokes.index(stokes)
    order = np.argsort(wl, kind="stable")
    if np.any(np.diff(wl[order]) <= 0):
        raise ProfileSchemaError(f"{spect}: two tunings have the same wavelength; expected distinct tunings")
    shape = (nscan, ns, nw, hdr.ny, hdr.nx)
    lazy = _LazyCube(path, shape, hdr.dtype)
    if chunks is None:
        data: Any = lazy[:, s]
    else:
        import dask.array as da
        from dask.base import tokenize

        token = tokenize(str(path.resolve()), path.stat().st_mtime_ns, shape, s)
        data = da.from_array(lazy, chunks=(1, 1, -1, -1, -1), name=f"lapalma-{token}")[:, s]
    dims = ("time", found.dim, "y", "x")
    var = xr.DataArray(data, dims=dims, attrs={
        "units": units, "stokes": stokes, "source_file": src,
        "units_note": "La Palma cubes carry no unit; taken as given by units= (default DN: uncalibrated)"})
    if not np.all(order == np.arange(nw)):
        var = var.isel({found.dim: order})
    if nscan == 1:
        var = var.isel(time=0)
    coords = {
        found.dim: (found.dim, wl[order], {"units": "Angstrom", "wavelength_medium": medium,
                                           "long_name": f"{found.label} tuning wavelength ({medium})"}),
        "y": ("y", np.arange(hdr.ny), {"long_name": "pixel index along the cube's ny (0-based)"}),
        "x": ("x", np.arange(hdr.nx), {"long_name": "pixel index along the cube's nx (0-based)"}),
    }
    ds = xr.Dataset({found.var: var}, coords=coords)
    if chunks is not None and chunks != {}:
        ds = ds.chunk(chunks) if not isinstance(chunks, Mapping) else ds.chunk(
            {k: v for k, v in chunks.items() if k in ds.dims})
    ds.attrs = {"source_files": [src, str(spect)], "reader": "lapalma", "line": found.key, "stokes": stokes,
                "lapalma_header": hdr.text, "spect_pos_read_as": how}
    return ds


def _idl_long(v: int) -> bytes:
    return struct.pack(">l", int(v))


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _write_idl_save(path: Path, variables: Mapping[str, np.ndarray]) -> None:
    """A minimal uncompressed IDL save file of 1D float32/float64/int32 arrays (what a CRISPEX
    spectfile holds; no library writes the format)."""
    codes = {np.dtype("float32"): (4, ">f4"), np.dtype("float64"): (5, ">f8"), np.dtype("int32"): (3, ">i4")}
    out = bytearray(b"SR\x00\x04")
    for name, value in variables.items():
        arr = np.asarray(value).ravel()
        if arr.dtype not in codes:
            raise ConfigError(f"{path}: cannot write {name} of dtype {arr.dtype}; expected float32, float64 or int32")
        code, be = codes[arr.dtype]
        data = _pad4(arr.astype(be).tobytes())
        body = _idl_long(len(name)) + _pad4(name.upper().encode("latin1"))
        body += _idl_long(code) + _idl_long(4)  # type code; flags: an array
        body += _idl_long(8) + _idl_long(0) + _idl_long(arr.nbytes) + _idl_long(arr.size) + _idl_long(1)
        body += _idl_long(0) + _idl_long(0) + _idl_long(8) + _idl_long(arr.size) + _idl_long(1) * 7
        body += _idl_long(7) + data  # VARSTART, then the values
        nextrec = len(out) + 16 + len(body)
        out += _idl_long(2) + struct.pack(">II", nextrec, 0) + b"\x00" * 4 + body
    out += _idl_long(6) + struct.pack(">II", len(out) + 16, 0) + b"\x00" * 4
    path.write_bytes(bytes(out))


def write_lapalma_cube(
    path: str | Path,
    scans: xr.Dataset,
    line: Line,
    tunings_air_A: np.ndarray,
    gain: float,
    spectfile: str | Path | None = None,
    offsets: bool = True,
    polarimetric: bool = False,
    dtype: str = "int16",
) -> tuple[Path, Path]:
    """Write one line's scans as a CRISPEX La Palma cube and its spectfile (for tests and examples).

    Parameters
    ----------
    path : path
        The cube (``.icube`` for int16, ``.fcube`` for float32).
    scans : xarray.Dataset
        Profiles (schema of :mod:`radynversion.schema`, air wavelengths) over ``([time,] y, x)``;
        the line is interpolated linearly onto the tunings.
    line : Line
    tunings_air_A : ndarray, shape ``(W,)``
        The program [air Angstrom]; written in this order (CRISPEX cubes need not be sorted).
    gain : float
        Intensity per count: the values are ``I / gain`` (rounded for int16).
    spectfile : path, optional
        Default ``spectfile.<6563|8542>.idlsave`` beside the cube.
    offsets : bool
        ``spect_pos`` as offsets from the air rest wavelength (as many CRISPRED spectfiles have
        it) instead of absolute air wavelengths.
    polarimetric : bool
        Write Stokes I, Q, U, V (Q, U, V zero) with ``stokes=[I,Q,U,V]`` in the header.
    dtype : {"int16", "float32"}

    Returns
    -------
    (cube path, spectfile path)
    """
    from ..schema import wavelengths_air_A

    path = Path(path)
    wl_air = np.asarray(tunings_air_A, dtype=float)
    src = scans[line.var]
    if "time" not in src.dims:
        src = src.expand_dims("time")
    src = src.transpose("time", "y", "x", line.dim)
    wl_src = wavelengths_air_A(scans, line)
    o = np.argsort(wl_src)
    arr = np.asarray(src.values, dtype=float)[..., o]
    flat = arr.reshape(-1, arr.shape[-1])
    cube = np.stack([np.interp(wl_air, wl_src[o], row) for row in flat]).reshape(*arr.shape[:3], wl_air.size)
    cube = np.moveaxis(cube, -1, 1) / gain  # (nscan, nw, ny, nx)
    if not np.all(np.isfinite(cube)):
        raise ProfileSchemaError(f"write_lapalma_cube: {line.var} has NaN or inf at the tunings; expected finite radiances")
    np_dtype = np.dtype(dtype)
    if np_dtype == np.int16:
        cube = np.round(cube)
        if cube.max() > 32767 or cube.min() < -32768:
            raise ConfigError(f"write_lapalma_cube: gain {gain:g} gives counts up to {cube.max():.0f}; "
                              "expected int16 (choose another gain)")
    elif np_dtype != np.float32:
        raise ConfigError(f"write_lapalma_cube: dtype {dtype!r}; expected 'int16' or 'float32'")
    cube = cube.astype(np_dtype)
    ns = 4 if polarimetric else 1
    frames = np.zeros((cube.shape[0], ns, *cube.shape[1:]), dtype=np_dtype)
    frames[:, 0] = cube
    nt = frames.shape[0] * ns * wl_air.size
    code = {v: k for k, v in _DTYPES.items()}[np_dtype.str[1:]]
    text = (f" datatype={code} {_TYPE_NAMES[np_dtype.str[1:]]}, dims=3, nx={frames.shape[-1]}, "
            f"ny={frames.shape[-2]}, nt={nt}, endian=l")
    if polarimetric:
        text += ", stokes=[I,Q,U,V], ns=4"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode("latin1").ljust(_HEADER_BYTES, b"\x00"))
        f.write(frames.astype(np_dtype.newbyteorder("<")).tobytes())
    token = str(int(round(line.center_air_A)))
    spect = Path(spectfile) if spectfile is not None else path.parent / f"spectfile.{token}.idlsave"
    pos = wl_air - line.center_air_A if offsets else wl_air
    _write_idl_save(spect, {"spect_pos": pos.astype(np.float32 if offsets else np.float64),
                            "norm_spect": np.ones(wl_air.size, dtype=np.float32),
                            "norm_factor": np.ones(1, dtype=np.float32)})
    return path, spect
