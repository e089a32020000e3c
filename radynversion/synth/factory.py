"""The training-set factory: one atmosphere per Dask task, shards written to Zarr.

Layout of a training-set store (Zarr format 2, one chunk per shard along ``sample``):

* ``I_halpha (sample, wl_halpha)``, ``I_ca8542 (sample, wl_ca8542)``: emergent intensity,
  units in attrs (W m^-2 Hz^-1 sr^-1), wavelengths in air Angstrom;
* ``log_ne, log_T, v (sample, height)``: the atmosphere on the node grid (``log_ne`` the
  converged NLTE value);
* ``status (sample)`` 0/1/2 = converged/not converged/failed, ``message (sample)`` why,
  ``iterations (sample)``, ``kind (sample)`` quiet/weak/flare, ``prior_params (sample, param)``;
* ``shard_done (shard)``: 1 once a shard is completely written. Written last, so a store
  killed mid-shard simply recomputes that shard on resume.

The store's metadata is written once, at creation, with the full size ``n``; shards are
region writes of their own chunk files, so the store only ever gains files (git stores each
byte once) and a resumed run produces byte-identical chunks: every sample is seeded by its
index (:func:`radynversion.synth.prior.sample_atmosphere`) and Lightweaver runs on one thread.
Rerun with a larger ``n`` and an otherwise equal configuration to grow a store: its arrays
are resized along ``sample`` and only the new shards are computed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..atmosphere import VARIABLE_ATTRS, default_height_grid
from ..config import from_toml, to_toml
from ..datasets import store_digest as _store_digest
from ..errors import StoreError
from ..lines import LINES
from .nlte import STATUS_CONVERGED, STATUS_NAMES, NLTEConfig, SynthesisResult, synthesise
from .noneq import NONEQ_PARAM_NAMES, NonEquilibriumConfig, departure
from .prior import KINDS, PARAM_NAMES, FlareAtmosphere, PriorConfig, sample_atmosphere
from .smooth import SMOOTH_PARAM_NAMES, SmoothConfig, sample_smooth

__all__ = ["SynthConfig", "run_synthesis", "shard_status", "STORE_KIND", "GENERATORS", "draw_and_solve",
           "param_names"]

STORE_KIND = "radynversion training set"
INTENSITY_UNIT = "W / (m2 Hz sr)"
MESSAGE_WIDTH = 120


#: The atmosphere generators a store can be made with: ``prior`` (the default parametric
#: prior, :mod:`.prior`), ``smooth`` (smooth random stratifications, :mod:`.smooth`) and
#: ``noneq`` (either base, with its electron density out of statistical equilibrium,
#: :mod:`.noneq`).
GENERATORS: tuple[str, ...] = ("prior", "smooth", "noneq")


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a training set (saved in the store's attrs).

    ``generator`` picks the atmosphere recipe (:data:`GENERATORS`); the table of each recipe
    holds its ranges. Use different seeds for stores of different generators: the ``noneq``
    generator draws its base atmospheres from the same streams as ``prior`` and ``smooth``.
    """

    n: int = 1000
    seed: int = 0
    shard_size: int = 100
    generator: str = "prior"
    prior: PriorConfig = field(default_factory=PriorConfig)
    smooth: SmoothConfig = field(default_factory=SmoothConfig)
    noneq: NonEquilibriumConfig = field(default_factory=NonEquilibriumConfig)
    nlte: NLTEConfig = field(default_factory=NLTEConfig)

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            from ..errors import ConfigError

            raise ConfigError(f"SynthConfig: generator = {self.generator!r}; expected one of {list(GENERATORS)}")


def param_names(generator: str) -> tuple[str, ...]:
    """Names of the scalar draw parameters a store of ``generator`` records (``prior_params``)."""
    if generator == "prior":
        return PARAM_NAMES
    if generator == "smooth":
        return SMOOTH_PARAM_NAMES
    return tuple(dict.fromkeys(PARAM_NAMES + SMOOTH_PARAM_NAMES + NONEQ_PARAM_NAMES))


def draw_and_solve(index: int, cfg: SynthConfig) -> tuple[FlareAtmosphere, SynthesisResult]:
    """Draw atmosphere ``index`` of ``cfg``'s generator and solve it in NLTE.

    For ``noneq`` the result is the fixed-``n_e`` solve, with the iterations and seconds of
    both solves; a base atmosphere whose SE solve fails is recorded as that failure.
    """
    if cfg.generator == "prior":
        atmos = sample_atmosphere(index, cfg.seed, cfg.prior)
        return atmos, synthesise(atmos, cfg.nlte)
    if cfg.generator == "smooth":
        atmos = sample_smooth(index, cfg.seed, cfg.smooth)
        return atmos, synthesise(atmos, cfg.nlte)
    pick = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index), 3])).uniform()
    base_smooth = bool(pick < cfg.noneq.p_smooth)
    atmos = (sample_smooth(index, cfg.seed, cfg.smooth) if base_smooth
             else sample_atmosphere(index, cfg.seed, cfg.prior))
    atmos.params["base_smooth"] = float(base_smooth)
    se = synthesise(atmos, cfg.nlte)
    if se.status != STATUS_CONVERGED:
        se.message = f"SE reference: {se.message}"
        return atmos, se
    zd = se.depth_z_m[::-1]
    ne_se = 10 ** np.interp(atmos.z_m, zd, np.log10(se.depth_ne_m3[::-1]))
    fixed = departure(atmos, ne_se, index, cfg.seed, cfg.noneq)
    res = synthesise(fixed, cfg.nlte)
    res.iterations += se.iterations
    res.seconds += se.seconds
    return fixed, res


def _synth_one(index: int, cfg: SynthConfig) -> dict:
    atmos, res = draw_and_solve(index, cfg)
    params = np.array([atmos.params.get(k, np.nan) for k in param_names(cfg.generator)], dtype=np.float32)
    return {
        "index": index,
        "status": res.status,
        "message": res.message[:MESSAGE_WIDTH],
        "iterations": res.iterations,
        "seconds": res.seconds,
        "kind": KINDS.index(atmos.kind),
        "params": params,
        "log_ne": res.log_ne.astype(np.float32),
        "log_T": res.log_T.astype(np.float32),
        "v": res.v.astype(np.float32),
        **{f"I_{k}": v.astype(np.float32) for k, v in res.intensity.items()},
    }


def _n_shards(n: int, shard_size: int) -> int:
    """Shards of ``shard_size`` samples that hold ``n`` (the last one may be short)."""
    return -(-n // shard_size)


def _template(cfg: SynthConfig) -> xr.Dataset:
    import dask.array as da

    n, c = cfg.n, cfg.shard_size
    heights = default_height_grid()
    n_shards = _n_shards(n, c)

    def empty(shape, dtype, fill):
        chunks = (c, *shape[1:])
        return da.full(shape, fill, dtype=dtype, chunks=chunks)

    data_vars = {}
    coords = {
        "sample": ("sample", np.arange(n)),
        "height": ("height", heights, dict(VARIABLE_ATTRS["height"])),
        "param": ("param", np.array(param_names(cfg.generator), dtype="<U32")),
    }
    for ln in LINES:
        wl = ln.synth_wavelengths()
        coords[ln.dim] = (
            ln.dim, wl, {"units": "Angstrom", "wavelength_medium": "air", "long_name": f"{ln.label} wavelength (air)"},
        )
        data_vars[ln.var] = (
            ("sample", ln.dim), empty((n, wl.size), np.float32, np.nan),
            {"units": INTENSITY_UNIT, "long_name": f"{ln.label} emergent intensity"},
        )
    for name in ("log_ne", "log_T", "v"):
        data_vars[name] = (("sample", "height"), empty((n, heights.size), np.float32, np.nan),
                           dict(VARIABLE_ATTRS[name]))
    data_vars["status"] = (("sample",), empty((n,), np.int8, -1), {
        "flag_values": list(STATUS_NAMES), "flag_meanings": " ".join(STATUS_NAMES.values()),
        "long_name": "NLTE solution status (-1 = not yet computed)"})
    data_vars["message"] = (("sample",), empty((n,), f"<U{MESSAGE_WIDTH}", ""),
                            {"long_name": "why a case did not converge or failed"})
    data_vars["iterations"] = (("sample",), empty((n,), np.int16, -1), {})
    data_vars["kind"] = (("sample",), empty((n,), np.int8, -1), {
        "flag_values": list(range(len(KINDS))), "flag_meanings": " ".join(KINDS)})
    data_vars["prior_params"] = (("sample", "param"), empty((n, len(param_names(cfg.generator))), np.float32, np.nan),
                                 {"long_name": "scalar parameters of the prior draw"})
    data_vars["shard_done"] = (("shard",), da.zeros(n_shards, dtype=np.int8, chunks=1),
                               {"long_name": "1 once the shard is completely written"})
    import lightweaver

    from .._version import __version__

    attrs = {
        "radynversion_store": STORE_KIND,
        "radynversion_version": __version__,
        "lightweaver_version": lightweaver.__version__,
        "synth_config": to_toml(cfg),
        "conventions": "v positive = downflow = redshift; wavelengths air Angstrom; "
        f"intensity at mu = {cfg.nlte.mu:g}",
        "shard_size": cfg.shard_size,
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _encoding(ds: xr.Dataset) -> dict:
    from numcodecs import Blosc

    comp = Blosc(cname="zstd", clevel=9, shuffle=Blosc.BITSHUFFLE)
    enc = {}
    for name, var in ds.data_vars.items():
        e = {"compressors": (comp,)}
        if var.dtype.kind == "f":
            e["_FillValue"] = np.nan
        elif name in ("status", "kind", "iterations"):
            e["_FillValue"] = -1  # unwritten samples must not read as status 0 = converged
        enc[name] = e
    return enc


#: the generator tables each generator uses (the others do not change what a store holds)
_USES = {"prior": ("prior",), "smooth": ("smooth",), "noneq": ("prior", "smooth", "noneq")}


def _relevant(cfg: SynthConfig) -> SynthConfig:
    """``cfg`` with the tables its generator does not use at their defaults, so that a change
    of another generator's defaults never stops a store from resuming."""
    unused = {t: type(getattr(cfg, t))() for t in ("prior", "smooth", "noneq") if t not in _USES[cfg.generator]}
    return replace(cfg, **unused)


def _open_or_create(out: Path, cfg: SynthConfig) -> xr.Dataset:
    if out.exists():
        try:
            existing = xr.open_zarr(out, consolidated=False)
        except Exception as err:  # noqa: BLE001
            raise StoreError(f"{out}: exists and is not a Zarr store ({type(err).__name__}); "
                             "choose another --out or remove it") from None
        if existing.attrs.get("radynversion_store") != STORE_KIND:
            raise StoreError(f"{out}: exists and is not a radynversion training set; "
                             "choose another --out")
        stored = _relevant(from_toml(SynthConfig, existing.attrs["synth_config"], where=f"{out} attrs"))
        cfg = _relevant(cfg)
        if stored.n != cfg.n and replace(stored, n=cfg.n) == cfg:
            if cfg.n < stored.n:
                raise StoreError(
                    f"{out}: holds {stored.n} draws and a store is never shrunk; pass n >= {stored.n} "
                    "(train on fewer with `radynversion train --first N`)")
            _grow(out, stored, cfg.n)
            return xr.open_zarr(out, consolidated=False)
        if stored != cfg:
            raise StoreError(
                f"{out}: was made with a different configuration ({_diff(stored, cfg)}); "
                "rerun with the same options or choose another --out")
        import zarr

        zarr.consolidate_metadata(str(out))  # a growth stopped after its attrs: refresh the summary
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpl = _template(cfg)
    tmpl.to_zarr(out, mode="w-", compute=False, encoding=_encoding(tmpl), zarr_format=2,
                 consolidated=True)
    return xr.open_zarr(out, consolidated=False)


def _grow(out: Path, stored: SynthConfig, n: int) -> None:
    """Extend a store made with ``stored`` to ``n`` draws, keeping every written chunk.

    Each draw is seeded by its index, so the grown store holds what a store made with ``n``
    from the start would. Arrays along ``sample`` are resized (new chunks read as their fill
    value until their shard is written), ``shard_done`` gains zeros, and a last shard that was
    short is marked undone so that it is recomputed at full size (its existing draws come out
    identical). The configuration in the attrs is updated last: a growth stopped half-way is
    simply repeated by the next run (every step is idempotent).
    """
    import zarr

    c = stored.shard_size
    old_shards, new_shards = _n_shards(stored.n, c), _n_shards(n, c)
    root = zarr.open_group(str(out), mode="r+", zarr_format=2, use_consolidated=False)
    for _, arr in root.arrays():
        dims = arr.attrs.get("_ARRAY_DIMENSIONS", [])
        if dims[:1] == ["sample"] and arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))
    root["sample"][stored.n:] = np.arange(stored.n, n)
    done = root["shard_done"]
    if done.shape[0] != new_shards:
        done.resize((new_shards,))
        done[old_shards:] = 0
    if stored.n % c:
        done[old_shards - 1] = 0
    cfg = replace(stored, n=n)
    root.attrs["synth_config"] = to_toml(cfg)
    zarr.consolidate_metadata(str(out))


def _diff(a: SynthConfig, b: SynthConfig) -> str:
    da_, db = to_toml(a).splitlines(), to_toml(b).splitlines()
    return "; ".join(f"{x!r} vs {y!r}" for x, y in zip(da_, db, strict=False) if x != y)[:300]


def shard_status(store: str | Path) -> np.ndarray:
    """Boolean array, one per shard: True when the shard is completely written."""
    import zarr

    return np.asarray(zarr.open_array(str(Path(store) / "shard_done"), mode="r")[:]) == 1


def _write_shard(out: Path, k: int, cfg: SynthConfig, rows: list[dict]) -> None:
    import zarr

    rows = sorted(rows, key=lambda r: r["index"])
    a = k * cfg.shard_size
    b = a + len(rows)
    ds = xr.Dataset(
        {
            **{ln.var: (("sample", ln.dim), np.stack([r[ln.var] for r in rows])) for ln in LINES},
            **{v: (("sample", "height"), np.stack([r[v] for r in rows])) for v in ("log_ne", "log_T", "v")},
            "status": (("sample",), np.array([r["status"] for r in rows], np.int8)),
            "message": (("sample",), np.array([r["message"] for r in rows], f"<U{MESSAGE_WIDTH}")),
            "iterations": (("sample",), np.array([r["iterations"] for r in rows], np.int16)),
            "kind": (("sample",), np.array([r["kind"] for r in rows], np.int8)),
            "prior_params": (("sample", "param"), np.stack([r["params"] for r in rows])),
        }
    )
    ds.to_zarr(out, region={"sample": slice(a, b)}, zarr_format=2)
    zarr.open_array(str(out / "shard_done"), mode="r+")[k] = 1


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None, client: Any = None) -> Iterator:
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or max(1, (os.cpu_count() or 1))
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                      ) as cluster, Client(cluster) as client:
        yield client


def run_synthesis(
    out: str | Path,
    config: SynthConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    max_shards: int | None = None,
    log: str | Path | None = None,
    client: Any = None,
) -> dict:
    """Make (or resume) a training set at ``out``.

    Parameters
    ----------
    out : path
        Zarr store. Created if absent; if present it must be a training set made with the
        same ``config`` and the missing shards are computed (resume).
    config : SynthConfig
        What to make.
    workers : int, optional
        Workers of the LocalCluster started when no ``scheduler`` is given (default: cores).
    scheduler : str, optional
        Address of an existing Dask scheduler.
    progress : bool
        Show a tqdm progress bar.
    max_shards : int, optional
        Stop after writing this many shards (for incremental runs).
    log : path, optional
        Append one line per sample (index, status, iterations, seconds) to this file.
    client : distributed.Client, optional
        Run on this client's cluster (e.g. from :func:`radynversion.engine.cluster.cluster_client`:
        SLURM, or a scheduler watched for lost workers); ``workers`` and ``scheduler`` are then
        ignored and the client is left open.

    Returns
    -------
    dict
        Counts of converged / not converged / failed samples written in this call, the
        number of shards written and the summed synthesis seconds.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    cfg = SynthConfig() if config is None else config
    out = Path(out)
    _open_or_create(out, cfg)
    done = shard_status(out)
    todo = [k for k in range(done.size) if not done[k]]
    if max_shards is not None:
        todo = todo[:max_shards]
    stats = {"converged": 0, "not_converged": 0, "failed": 0, "shards": 0, "seconds": 0.0}
    if not todo:
        return stats
    pending: dict[int, list[dict]] = {k: [] for k in todo}
    sizes = {k: min(cfg.shard_size, cfg.n - k * cfg.shard_size) for k in todo}
    logf = open(log, "a") if log else None  # noqa: SIM115
    try:
        with _client(workers, scheduler, client) as client:
            futures = []
            for k in todo:
                for i in range(k * cfg.shard_size, k * cfg.shard_size + sizes[k]):
                    futures.append(client.submit(_synth_one, i, cfg,
                                                 key=f"synth-{cfg.generator}-{cfg.seed}-{i}", priority=-k))
            bar = tqdm(total=sum(sizes.values()), desc=f"synth {out.name}", unit="atm",
                       disable=not progress, smoothing=0.05)
            for fut in as_completed(futures):
                r = fut.result()
                fut.release()
                k = r["index"] // cfg.shard_size
                pending[k].append(r)
                stats[STATUS_NAMES[r["status"]]] += 1
                stats["seconds"] += r["seconds"]
                if logf:
                    logf.write(f"{r['index']} {r['status']} {r['iterations']} {r['seconds']:.2f} {r['message']}\n")
                    logf.flush()
                bar.update(1)
                if len(pending[k]) == sizes[k]:
                    _write_shard(out, k, cfg, pending.pop(k))
                    stats["shards"] += 1
            bar.close()
    finally:
        if logf:
            logf.close()
    return stats


def store_digest(store: str | Path) -> str:
    """SHA-256 over the data chunks of a store (metadata files skipped): equal digests = identical data."""
    return _store_digest(store, metadata=False)
