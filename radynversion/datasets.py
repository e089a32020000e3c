"""Data sets: the example scan shipped with the package (``radynversion/data``), and the
training sets of a repository checkout (``data/``: Zarr stores, one per atmosphere generator,
not part of the wheel). Nothing is downloaded."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import StoreError
from .lines import LINES
from .schema import source_name

__all__ = ["training_set", "training_set_path", "training_union", "dataset_hash", "store_digest",
           "example_scan", "example_observation", "example_truth", "example_crispy", "LABEL_STRIDE",
           "usable_samples", "sample_labels", "evaluation_split", "splitmix64"]

#: sample labels of component k of a union are ``k * LABEL_STRIDE + draw`` (unique, and the
#: first component keeps its own labels, so its held-out split is the one it has alone)
LABEL_STRIDE = 10_000_000


#: where the training sets live: the repository's ``data/`` folder (not part of the wheel)
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: how reports and checkpoints name the default training set (and how they named it before
#: it left the package)
DEFAULT_SET_LABELS = ("data/prior.zarr (repository)", "radynversion/data/training_set.zarr (packaged)")


def training_set_path() -> Path:
    """Path of the default training set: ``data/prior.zarr`` of a repository checkout (a Zarr
    store of the default prior's draws; the training sets are not part of the installed wheel)."""
    return DATA_DIR / "prior.zarr"


def source_label(data: xr.Dataset) -> str:
    """Where ``data`` was read from, as a report or checkpoint should record it: the shipped
    training set by its name in the package (the same on every machine), any other store by
    its path, ``"<training set>"`` for data built in memory."""
    src = source_name(data, default="<training set>")
    try:
        packaged = Path(src).resolve() == training_set_path().resolve()
    except OSError:
        packaged = False
    return DEFAULT_SET_LABELS[0] if packaged else src


def training_set(path: str | Path | None = None, converged_only: bool = True, load: bool = True) -> xr.Dataset:
    """The default (or any) training set as an xarray Dataset in the profile schema.

    Parameters
    ----------
    path : path, optional
        A store written by ``radynversion synth`` or ``import-radyn``, or a TOML file naming
        several (:func:`training_union`); default the prior's set of a checkout
        (:func:`training_set_path`).
    converged_only : bool
        Keep only samples whose NLTE solution converged (``status == 0``); samples of shards
        not yet written are always dropped.
    load : bool
        Load into memory (the shipped set is a few tens of MB).

    Returns
    -------
    xr.Dataset
        ``I_halpha (sample, wl_halpha)``, ``I_ca8542 (sample, wl_ca8542)`` [W m^-2 Hz^-1 sr^-1],
        ``log_ne, log_T, v (sample, height)``, ``status``, ``kind``, ``prior_params``.
    """
    path = training_set_path() if path is None else Path(path)
    if path.suffix == ".toml" and path.is_file():
        return training_union(path, converged_only=converged_only)
    if not path.exists():
        hint = ("; the training sets live in the data/ folder of a repository checkout, not in the "
                "installed package: clone the repository, or pass a store's path") if path == training_set_path() else ""
        raise StoreError(f"{path}: no training set here{hint}")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as err:  # noqa: BLE001
        raise StoreError(f"{path}: not a readable Zarr training set ({type(err).__name__}: {err})") from None
    if "status" not in ds:
        raise StoreError(f"{path}: not a training set (no 'status' variable)")
    if "shard_done" in ds:
        done = np.asarray(ds["shard_done"].values) == 1
        size = int(ds.attrs.get("shard_size", ds.sizes["sample"]))
        keep = np.repeat(done, size)[: ds.sizes["sample"]]
        ds = ds.drop_vars("shard_done").isel(sample=np.flatnonzero(keep))
    if converged_only:
        ds = ds.isel(sample=np.flatnonzero(np.asarray(ds["status"].values) == 0))
    return ds.load() if load else ds


def training_union(
    components: str | Path | dict[str, str | Path],
    first: dict[str, int] | None = None,
    converged_only: bool = True,
) -> xr.Dataset:
    """Several training sets (e.g. one per atmosphere generator) as one.

    Parameters
    ----------
    components : mapping name -> store path, or a TOML file
        In order; a TOML file has a ``[components]`` table (name = path, relative paths from
        the file's folder) and optionally ``[first]`` (name = N: only that component's draws
        with label < N, a fixed part of a store that is still growing).
    first : mapping name -> int, optional
        As the TOML's ``[first]`` (it overrides it).
    converged_only : bool
        As :func:`training_set`.

    Returns
    -------
    xarray.Dataset
        The components concatenated along ``sample``, with coordinates ``population``
        (component name) and ``draw`` (label within its store); ``sample`` labels are
        ``k * LABEL_STRIDE + draw`` for component ``k`` (unique; the first component's labels,
        and so its held-out split, are its own). Each component's ``prior_params`` (different
        per generator) are dropped; ``attrs["components"]`` records names, paths and counts.
    """
    import tomllib

    base = Path(".")
    cut = dict(first or {})
    if not isinstance(components, dict):
        toml_path = Path(components)
        try:
            spec = tomllib.loads(toml_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise StoreError(f"{toml_path}: not a readable union file ({type(err).__name__}: {err})") from None
        if not isinstance(spec.get("components"), dict) or not spec["components"]:
            raise StoreError(f"{toml_path}: expected a [components] table of name = store path")
        base = toml_path.parent
        components = dict(spec["components"])
        cut = {**dict(spec.get("first", {})), **cut}
    parts, record = [], []
    for k, (name, where) in enumerate(components.items()):
        path = Path(where) if Path(where).is_absolute() else base / where
        ds = training_set(path, converged_only=converged_only)
        draw = np.asarray(ds["sample"].values, dtype=np.int64)
        if name in cut:
            ds, draw = ds.isel(sample=draw < int(cut[name])), draw[draw < int(cut[name])]
        ds = ds.drop_vars([v for v in ("prior_params", "param") if v in ds.variables])
        ds = ds.assign_coords(sample=k * LABEL_STRIDE + draw, draw=("sample", draw),
                              population=("sample", np.full(draw.size, name, dtype=f"<U{max(8, len(name))}")))
        ds.attrs = {}
        parts.append(ds)
        record.append({"name": name, "path": str(where), "samples": int(draw.size),
                       **({"first": int(cut[name])} if name in cut else {})})
    out = xr.concat(parts, dim="sample", join="exact", combine_attrs="override")  # variable attrs kept
    import json

    out.attrs["components"] = json.dumps(record)
    out.encoding["source"] = " + ".join(f"{r['name']}={r['path']}" for r in record)
    return out


def dataset_hash(ds: xr.Dataset, variables: tuple[str, ...] = ("I_halpha", "I_ca8542", "log_ne", "log_T", "v")) -> str:
    """SHA-256 over the values (as float32) and sample labels of ``variables``: identifies the
    exact data a model saw."""
    h = hashlib.sha256()
    if "sample" in ds.coords:
        h.update(np.ascontiguousarray(ds["sample"].values).tobytes())
    for name in variables:
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(ds[name].values, dtype=np.float32)).tobytes())
    return h.hexdigest()


def _example_dir() -> Path:
    return Path(str(resources.files("radynversion") / "data" / "example_scan"))


def example_scan() -> tuple[Path, Path]:
    """Paths of the example scan: two SSTRED cubes (H-alpha, then Ca II 8542).

    A synthetic SST/CRISP flare observation of 64 x 64 pixels (0.058 arcsec, near disk
    centre), one scan per line at irregular CRISP tunings (H-alpha 15, Ca II 8542 21, with 1 %
    noise), in W m^-2 Hz^-1 sr^-1: a curved ribbon of flaring atmospheres (up- and downflows),
    weakly heated surroundings and quiet Sun, made from atmospheres that are not in the
    training set (``examples/make_example_scan.py``). The true atmospheres are
    :func:`example_truth`.

    Example
    -------
    >>> from radynversion.io import open_observation
    >>> scan = open_observation(example_scan())
    >>> scan.sizes["y"], scan.sizes["x"]
    (64, 64)
    """
    d = _example_dir()
    paths = tuple(sorted(d.glob("nb_*_im.fits")))
    if len(paths) != 2:
        raise StoreError(f"{d}: expected the two example cubes (nb_6563_*_im.fits, nb_8542_*_im.fits); "
                         "make them with examples/make_example_scan.py")
    return paths[0], paths[1]


def example_crispy() -> tuple[Path, Path]:
    """Paths of the uncalibrated example pair: the example scan as a 2014-era crisPy level-2
    observation (int16 DN, no quiet-Sun calibration, H-alpha 15 and Ca II 8542 25 tunings
    centred 30 mA blue of rest, a gain per line; ``examples/make_example_crispy.py``).

    ``radynversion invert`` (or ``radynversion.io.open_observation(...).radyn.invert()``)
    inverts it with the default model's variant for uncalibrated data. The true atmospheres are
    :func:`example_truth`'s.
    """
    d = Path(str(resources.files("radynversion") / "data" / "example_crispy"))
    paths = tuple(sorted(d.glob("crisp_l2_*.fits")))
    if len(paths) != 2:
        raise StoreError(f"{d}: expected the two crisPy files (crisp_l2_*_6563_*.fits, *_8542_*.fits); "
                         "make them with examples/make_example_crispy.py")
    return paths[0], paths[1]


def example_observation(chunks=None) -> xr.Dataset:
    """The example scan (:func:`example_scan`) opened in the profile schema, ready to invert.

    The same as ``radynversion.io.open_observation(example_scan(), chunks=chunks)``.

    Parameters
    ----------
    chunks : None, int, "auto" or mapping of dim -> size
        As :func:`radynversion.io.open_observation`: None reads the cubes into memory (0.6 MB).

    Returns
    -------
    xr.Dataset
        ``I_halpha (time, wl_halpha, y, x)`` (15 tunings) and ``I_ca8542 (time, wl_ca8542, y, x)``
        (21 tunings) [W m^-2 Hz^-1 sr^-1], wavelengths in air Angstrom, ``time`` of length 1,
        ``y``, ``x`` = pixel indices (64 each); the spatial WCS (``map_header_*``) and observer
        metadata in attrs.

    Example
    -------
    >>> scan = example_observation()
    >>> scan.sizes["y"], scan.sizes["x"], scan.sizes["wl_halpha"]
    (64, 64, 15)
    >>> out = scan.isel(y=slice(0, 2), x=slice(0, 2)).radyn.invert(samples=16)  # doctest: +SKIP
    >>> out.log_T.sel(quantile=0.5).compute()  # doctest: +SKIP
    """
    from .io.observation import open_observation

    return open_observation(list(example_scan()), chunks=chunks)


def example_truth() -> xr.Dataset:
    """The true atmospheres of :func:`example_scan`, pixel by pixel.

    Returns
    -------
    xr.Dataset
        ``log_ne`` [dex cm^-3], ``log_T`` [dex K], ``v`` [km/s, positive = downflow] over
        ``(y, x, height)`` (the 50 nodes, Mm) on the pixels of the cubes (``y``, ``x`` = pixel
        indices, as :func:`radynversion.io.open_observation` gives them); ``kind (y, x)``
        (0 quiet, 1 weak, 2 flare), ``pool_index (y, x)`` (the atmosphere's index in its
        pool), ``ribbon_offset (y, x)``.
    """
    path = _example_dir() / "truth.nc"
    if not path.is_file():
        raise StoreError(f"{path}: no example truth here; make it with examples/make_example_scan.py")
    with xr.open_dataset(path) as ds:
        return ds.load()


def store_digest(store: str | Path, metadata: bool = True) -> str:
    """SHA-256 over the files of a Zarr store (relative names and bytes, sorted): equal
    digests = identical stores. ``metadata=False`` skips the ``.z*`` metadata files, comparing
    the data chunks only."""
    h = hashlib.sha256()
    root = Path(store)
    for p in sorted(root.rglob("*")):
        if p.is_file() and (metadata or not p.name.startswith(".z")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# -- splits: which draws a model may train on -------------------------------------------------
def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser of unsigned 64-bit integers (element-wise): a fixed, well-mixed
    hash, the basis of the held-out split and of the per-pixel seeds."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def usable_samples(data: xr.Dataset) -> np.ndarray:
    """Positions along ``sample`` of converged samples (``status == 0`` where a ``status``
    variable exists) with finite profiles and atmosphere; shape ``(K,)``, int64."""
    n = data.sizes["sample"]
    ok = np.ones(n, dtype=bool)
    if "status" in data:
        ok &= np.asarray(data["status"].values) == 0
    for name in [ln.var for ln in LINES] + ["log_ne", "log_T", "v"]:
        arr = np.asarray(data[name].transpose("sample", ...).values, dtype=float).reshape(n, -1)
        ok &= np.isfinite(arr).all(axis=1)
    return np.flatnonzero(ok)


def sample_labels(data: xr.Dataset) -> np.ndarray:
    """The labels of the samples: the ``sample`` coordinate (the draw index of a synthesised
    atmosphere, stable as a store grows) or, without one, the positions; shape ``(N,)``, int64."""
    if "sample" in data.coords and np.issubdtype(data["sample"].dtype, np.integer):
        return np.asarray(data["sample"].values, dtype=np.int64)
    return np.arange(data.sizes["sample"], dtype=np.int64)


#: salt of the held-out hash (a constant: the split must never change)
_TEST_SALT = np.uint64(0x7E57_5EED_2019_0873)


def evaluation_split(labels: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Whether each sample belongs to the held-out evaluation split.

    Membership is a SplitMix64 hash of the sample label alone, so it does not depend on which
    other samples a store holds: a model trained on a grown set still never sees them.

    Parameters
    ----------
    labels : ndarray of int, shape ``(N,)``
        :func:`sample_labels`.
    fraction : float
        Expected held-out fraction.

    Returns
    -------
    ndarray of bool, shape ``(N,)``

    Example
    -------
    >>> import numpy as np
    >>> from radynversion.model import evaluation_split
    >>> round(float(evaluation_split(np.arange(100_000)).mean()), 2)
    0.1
    """
    h = splitmix64(np.asarray(labels).astype(np.int64).astype(np.uint64) ^ _TEST_SALT)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53 < fraction
