"""The engine: a profile Dataset, chunked over its non-spectral dims, in; a lazy Dataset out.

Every chunk of the input (all its wavelengths, a block of its non-spectral dims) becomes one
task that normalises the chunk's profiles once (:func:`radynversion.model.normalise_profiles`)
and runs the batched posterior core (:func:`radynversion.model.posterior.posterior`) on the
worker's copy of the model (:mod:`radynversion.engine.workers`). A pixel's seed is its
C-order index over the input's full non-spectral shape, computed from the chunk's offsets, so
the result of every pixel is the same whatever the chunking, the number of workers or of
devices (see :mod:`radynversion.model.posterior` for why the arithmetic agrees bit for bit).

Output (:func:`invert`): the result schema of :mod:`radynversion.model.result`, the same as the
in-memory :func:`radynversion.model.invert` gives: ``log_ne``, ``log_T``, ``v`` over ``(*dims,
quantile, height)`` (float32; dex cm^-3, dex K, km/s positive down), ``misfit(*dims)``
(float32, in units of the joint peak), ``peak(*dims)`` (float32, model intensity unit) and
``mask(*dims)`` (True where nothing was inverted: the input was not finite, negative, or
nowhere positive in a line), chunked like the input's non-spectral dims, with the input's
coordinates on those dims and its attrs plus the run's provenance.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..atmosphere import VARIABLES
from ..errors import ConfigError, ProfileSchemaError
from ..lines import LINES
from ..model.base import PosteriorModel
from ..model.checkpoint import default_model_for
from ..model.invert import network_input
from ..model.posterior import (
    PRECISIONS,
    check_samples_size,
    default_batch_size,
    posterior,
)
from ..model.precision import select_precision
from ..model.preprocess import check_profiles, input_options, sample_dims
from ..model.result import ResultSchema, RunSettings, VariableSpec, result_dataset, result_schema
from ..model.settings import InversionSettings, settings_from
from ..model.trust import trust_scores
from ..schema import source_name
from .workers import ModelPlugin, ModelSpec, model_spec, worker_device, worker_model

__all__ = ["DEFAULT_CHUNK_PIXELS", "Plan", "check_profiles", "plan_inversion", "invert", "runtime_settings",
           "ensure_plugin"]

#: pixels per chunk when the input is not chunked and no chunks are given
DEFAULT_CHUNK_PIXELS = 4096
_LETTERS = "abcdefghijklmnopqrstuv"


@dataclass(frozen=True)
class _Line:
    var: str
    dim: str
    wavelengths: np.ndarray
    wl_attrs: dict
    attrs: dict


@dataclass(frozen=True)
class BlockParams:
    """Everything a chunk task needs besides its data and the model (small, picklable)."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    lines: tuple[_Line, ...]
    source: str
    settings: InversionSettings  # precision and batch size resolved
    n_heights: int
    store: str | None = None

    def block_dataset(self, arrays: Sequence[np.ndarray]) -> xr.Dataset:
        """The chunk's profiles as a Dataset in the profile schema."""
        data_vars, coords = {}, {}
        for ln, arr in zip(self.lines, arrays, strict=True):
            data_vars[ln.var] = ((*self.dims, ln.dim), arr, ln.attrs)
            coords[ln.dim] = (ln.dim, ln.wavelengths, ln.wl_attrs)
        return xr.Dataset(data_vars, coords=coords, attrs={"source_file": self.source})

    def chunk_number(self, idx: Sequence[np.ndarray]) -> tuple[int, tuple[int, ...]]:
        """Flat (C-order) number of the chunk whose global indices are ``idx``, and its
        block index per dim."""
        block = tuple(int(np.searchsorted(s, int(i[0]), side="right") - 1)
                      for s, i in zip(self.starts, idx, strict=True))
        grid = tuple(len(s) for s in self.starts)
        return int(np.ravel_multi_index(block, grid)) if grid else 0, block


def _invert_block(*args: Any) -> dict[str, Any]:
    """One chunk: ``(I_line_1, ..., I_line_n, index_dim_1, ..., index_dim_d, spec, params)``
    -> dict of output arrays (or, with ``params.store``, the chunk written to the store and
    ``{"chunk": k}`` returned)."""
    p: BlockParams = args[-1]
    spec: ModelSpec = args[-2]
    n_lines = len(p.lines)
    arrays = args[:n_lines]
    idx = [np.asarray(i) for i in args[n_lines:-2]]
    net = worker_model(spec)
    block_shape = tuple(i.size for i in idx)
    st = p.settings
    y, peak = network_input(p.block_dataset(arrays), net, st.degrade, p.source)
    if idx:
        flat = np.ravel_multi_index(np.meshgrid(*idx, indexing="ij"), p.shape).reshape(-1)
    else:
        flat = np.zeros(1, dtype=np.int64)
    res = posterior(net, y, flat, **{**st.posterior_kwargs(), "max_samples_bytes": 2**62})
    n_q = len(st.quantiles)
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(VARIABLES):
        out[name] = res.quantiles[:, :, k, :].reshape(*block_shape, n_q, p.n_heights)
        if res.samples is not None:
            out[f"{name}_samples"] = res.samples[:, :, k, :].reshape(*block_shape, st.draws, p.n_heights)
    out["misfit"] = res.misfit.reshape(block_shape)
    out["peak"] = peak.astype(np.float32).reshape(block_shape)
    out["mask"] = ~res.valid.reshape(block_shape)
    ood, trusted = trust_scores(net.trust, y, res.misfit if st.misfit else None)
    out["ood_score"] = ood.reshape(block_shape)
    out["trusted"] = (trusted & res.valid).reshape(block_shape)
    if p.store is None:
        return out
    number, _ = p.chunk_number(idx)
    region = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    write_region(p.store, region, out)
    return {"chunk": number}


def write_region(store: str | Path, region: tuple[slice, ...], arrays: Mapping[str, np.ndarray]) -> None:
    """Write one chunk's arrays into their region of the store's variables.

    Parameters
    ----------
    store : path
        The Zarr store.
    region : tuple of slice
        The chunk's extent along the non-spectral dims.
    arrays : mapping variable -> ndarray, shape ``(*chunk shape, ...)``
    """
    import zarr

    for name, arr in arrays.items():
        z = zarr.open_array(str(Path(store) / name), mode="r+")
        z[region + (slice(None),) * (arr.ndim - len(region))] = arr


def _pick(block: dict[str, np.ndarray], name: str) -> np.ndarray:
    return block[name]


def _current_client() -> Any:
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _has_plugin(dask_scheduler: Any, name: str) -> bool:
    return name in getattr(dask_scheduler, "worker_plugins", {})


def ensure_plugin(client: Any, spec: ModelSpec) -> None:
    """Register :class:`ModelPlugin` of ``spec`` on ``client``'s cluster unless it already is
    (re-registering would reload the model on every worker)."""
    plugin = ModelPlugin(spec)
    if not client.run_on_scheduler(_has_plugin, name=plugin.name):
        client.register_plugin(plugin, name=plugin.name)


def _runtime_info(spec: ModelSpec, precision: str, batch_size: int | None,
                  probe: np.ndarray | None = None, samples: int = 1024,
                  compile: bool = False, sampling: str = "plain") -> dict[str, Any]:
    net = worker_model(spec)
    dev = worker_device(spec)
    prec = (select_precision(net, probe, samples=samples, compile=compile, sampling=sampling)
            if precision == "auto" else precision)
    if compile:  # compile the run's pass shape now: a tool chain that cannot fails before any chunk runs
        y = np.full((1, net.n_y), 0.5, np.float32) if probe is None else probe[:1]
        posterior(net, y, np.arange(1), samples=int(samples), precision=prec,
                  batch_size=int(batch_size) if batch_size else None, misfit=True, compile=True)
    return {"device": dev.type, "precision": prec,
            "batch_size": int(batch_size) if batch_size else default_batch_size(dev)}


def runtime_settings(spec: ModelSpec, precision: str = "auto", batch_size: int | None = None,
                     client: Any = None, probe: np.ndarray | None = None,
                     samples: int = 1024, compile: bool = False, sampling: str = "plain") -> dict[str, Any]:
    """Resolve ``precision="auto"`` and the default ``batch_size`` where the model runs: on a
    worker of ``client`` (or of the current default client), else in this process.

    ``"auto"`` runs the fastest precision of the workers' device whose arithmetic error is at
    most a quarter of the Monte Carlo error of the quantiles at ``samples`` draws on ``probe``
    (normalised profiles ``(N, 60)``, e.g. a few pixels of the data;
    :func:`radynversion.model.precision.select_precision`): bf16 on CUDA and on CPUs with AMX
    or AVX-512 BF16, else fp32. With ``compile`` the check runs the compiled passes (and a compiler that
    fails here fails before any chunk runs).

    Returns
    -------
    dict
        ``{"device": "cpu" | "cuda", "precision": ..., "batch_size": ...}``; all chunks of a
        run use these, so workers cannot disagree.
    """
    if precision != "auto" and precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}; expected 'auto' or one of {PRECISIONS}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size}; expected >= 1")
    client = client if client is not None else _current_client()
    if client is None:
        return _runtime_info(spec, precision, batch_size, probe, samples, compile, sampling)
    args = (_runtime_info, spec, precision, batch_size, probe, samples, compile, sampling)
    workers = sorted(client.scheduler_info().get("workers", {}))
    if not compile or not workers:
        return client.submit(*args, pure=False).result()
    # every worker compiles the passes now, all at once, instead of one after the other at
    # their first chunks; the first worker's answer is the run's
    return client.gather([client.submit(*args, pure=False, workers=[w]) for w in workers])[0]


def _worker_threads(client: Any) -> int:
    """Threads that run chunk tasks: the cluster's (all workers) or this machine's cores."""
    if client is not None:
        try:
            return max(1, sum(int(n) for n in client.nthreads().values()))
        except Exception:  # noqa: BLE001 - an unusual client: fall back to one
            return 1
    return os.cpu_count() or 1


def _probe_profiles(profiles: xr.Dataset, dims: tuple[str, ...], net: PosteriorModel,
                    degrade: bool | None, n: int = 32) -> np.ndarray | None:
    """Normalised profiles of up to ``n`` valid pixels from the start of the data."""
    sel: dict[str, Any] = {}
    left = 4 * n
    for d in reversed(dims):
        size = int(profiles.sizes[d])
        take = max(1, min(size, left))
        sel[d] = slice(0, take)
        left = max(1, left // take)
    y, _ = network_input(profiles.isel(sel).compute(), net, degrade, source_name(profiles))
    usable = np.isfinite(y).any(axis=1) if input_options(net)["partial"] else np.isfinite(y).all(axis=1)
    y = y[usable][:n]
    return y if y.size else None


def _auto_chunks(shape: tuple[int, ...], target: int = DEFAULT_CHUNK_PIXELS) -> tuple[int, ...]:
    """Chunk sizes of about ``target`` pixels: whole trailing dims, then a slab of the next."""
    out = [1] * len(shape)
    prod = 1
    for i in range(len(shape) - 1, -1, -1):
        if prod * shape[i] <= target:
            out[i] = shape[i]
            prod *= shape[i]
        else:
            out[i] = max(1, target // prod)
            break
    return tuple(out)


def _split_pieces(c: tuple[int, ...], size: int) -> tuple[int, ...]:
    """Each chunk of ``c`` cut into pieces of at most ``size`` (input boundaries kept)."""
    return tuple(p for n in c for p in da.core.normalize_chunks((size,), (n,))[0])


def _split_for_work(out: list[tuple[int, ...]], free: list[bool], max_pixels: int,
                    min_chunks: int) -> list[tuple[int, ...]]:
    """Cut the chunks of the dims not chosen by the user (``free``) so that no chunk holds more
    than ``max_pixels`` pixels and there are at least ``min_chunks`` chunks, where possible.

    Input chunks are sized for reading (dask's "auto" gives ~128 MiB: one chunk for a 64 x 64
    scan, two for a full CRISP scan), not for spreading the work: one chunk is one task."""
    out = list(out)

    def leading_free() -> int | None:  # leading dims first: chunks stay slabs of whole rows
        return next((i for i, f in enumerate(free) if f and max(out[i]) > 1), None)

    while math.prod(max(c) for c in out) > max_pixels and (i := leading_free()) is not None:
        rest = math.prod(max(c) for j, c in enumerate(out) if j != i)
        out[i] = _split_pieces(out[i], max(1, max_pixels // rest))
    while math.prod(len(c) for c in out) < min_chunks and (i := leading_free()) is not None:
        out[i] = _split_pieces(out[i], -(-max(out[i]) // 2))
    return out


def _normalise_chunks(
    profiles: xr.Dataset, dims: tuple[str, ...], shape: tuple[int, ...],
    chunks: Mapping[str, int | None] | None, regular: bool, min_chunks: int = 1,
) -> tuple[tuple[int, ...], ...]:
    """Spatial chunks: the requested ones, else the input's (I_halpha's), else automatic; the
    dims not requested are then cut to at most :data:`DEFAULT_CHUNK_PIXELS` pixels per chunk
    and, when no chunks were requested at all, to at least ``min_chunks`` chunks
    (:func:`_split_for_work`)."""
    chunks = dict(chunks or {})
    unknown = set(chunks) - set(dims)
    if unknown:
        raise ProfileSchemaError(f"chunks: unknown dims {sorted(unknown)}; the non-spectral dims "
                                 f"are {list(dims)}")
    var = profiles[next(ln.var for ln in LINES if ln.var in profiles.data_vars)]
    have = dict(zip(var.dims, var.chunks, strict=True)) if var.chunks is not None else {}
    auto = _auto_chunks(shape)
    out = []
    for d, n, a in zip(dims, shape, auto, strict=True):
        if d in chunks:
            c = chunks[d]
            size = n if c is None or c == -1 else int(c)
            if size < 1:
                raise ProfileSchemaError(f"chunks: {d}={c}; expected a positive size or -1")
            out.append(da.core.normalize_chunks((size,), (n,))[0])
        elif d in have:
            out.append(tuple(have[d]))
        else:
            out.append(da.core.normalize_chunks((a,), (n,))[0])
    free = [d not in chunks for d in dims]
    out = _split_for_work(out, free, DEFAULT_CHUNK_PIXELS, 1 if chunks else min_chunks)
    if regular:  # Zarr needs equal chunks (the last may be smaller)
        fixed = []
        for c, n in zip(out, shape, strict=True):
            if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
                c = da.core.normalize_chunks((c[0],), (n,))[0]
            fixed.append(c)
        out = fixed
    return tuple(out)


def _warn_padding(chunks: tuple[tuple[int, ...], ...], samples: int, batch_size: int) -> None:
    """Warn when most of the passes' rows would be padding (chunks much smaller than a pass)."""
    per_pass = max(1, batch_size // samples)
    if per_pass == 1:
        return
    px = np.ones(1, dtype=np.int64)
    for c in chunks:
        px = np.multiply.outer(px, np.asarray(c, dtype=np.int64)).reshape(-1)
    run = float(np.sum(-(-px // per_pass) * per_pass))
    waste = 1.0 - float(px.sum()) / run if run else 0.0
    if waste > 0.5:
        warnings.warn(
            f"invert: chunks of ~{int(np.median(px))} pixels fill passes of {per_pass} pixels "
            f"(batch_size {batch_size} // samples {samples}) to {100 * (1 - waste):.0f} %; use larger "
            "chunks or a smaller batch_size", stacklevel=4)


@dataclass
class Plan:
    """A planned inversion: the chunk tasks and what the output looks like.

    Attributes
    ----------
    blocks : dask.array.Array
        One object block per chunk (the dict of output arrays, or ``{"chunk": k}`` when
        writing to a store).
    dims, shape, chunks : the non-spectral dims, their sizes and chunks.
    schema : ResultSchema
        The result's variables, coordinates and attrs (:mod:`radynversion.model.result`, as
        the in-memory :func:`radynversion.model.invert` builds them).
    params : BlockParams
    spec : ModelSpec
    net : PosteriorModel
        CPU copy of the model (metadata).
    """

    blocks: da.Array
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]
    schema: ResultSchema
    params: BlockParams
    spec: ModelSpec
    net: PosteriorModel

    @property
    def coords(self) -> dict[str, Any]:
        """Output coordinates (quantile, height, the input's coordinates on ``dims``)."""
        return self.schema.coords

    @property
    def attrs(self) -> dict[str, Any]:
        """Output attrs (the input's attrs and the run's provenance)."""
        return self.schema.attrs

    @property
    def n_chunks(self) -> int:
        return math.prod(len(c) for c in self.chunks)

    def chunk_keys(self) -> list[tuple]:
        """Graph keys of the chunk tasks, in C order of the chunk grid."""
        return [(self.blocks.name, *b) for b in np.ndindex(*(len(c) for c in self.chunks))]

    def variable_chunks(self, spec: VariableSpec) -> tuple[tuple[int, ...], ...]:
        """Chunks of a result variable: the plan's over ``dims``, whole over the rest."""
        return (*self.chunks, *((n,) for n in spec.extra))

    def dataset(self) -> xr.Dataset:
        """The lazy output Dataset (one task per chunk feeds all its variables)."""
        nd = len(self.dims)
        arrays = {}
        for name, spec in self.schema.variables.items():
            extra = len(spec.extra)
            arrays[name] = da.map_blocks(
                _pick, self.blocks, name, dtype=spec.dtype, chunks=self.variable_chunks(spec),
                new_axis=list(range(nd, nd + extra)) if extra else None,
                meta=np.empty((0,) * len(spec.dims), dtype=spec.dtype), name=f"{name}-{self.blocks.name}")
        return result_dataset(arrays, self.schema)


def plan_inversion(
    profiles: xr.Dataset,
    model: PosteriorModel | str | Path | None = None,
    settings: InversionSettings | Mapping[str, Any] | None = None,
    *,
    chunks: Mapping[str, int | None] | None = None,
    device: str | None = None,
    client: Any = None,
    store: str | Path | None = None,
    regular: bool = False,
    spec: tuple[ModelSpec, PosteriorModel] | None = None,
    **overrides: Any,
) -> Plan:
    """Plan the chunk tasks of an inversion (see :func:`invert` for the parameters).

    ``store`` makes every task write its chunk to that (already created) Zarr store instead
    of returning it; ``regular`` makes the chunks equal (as Zarr needs); ``spec`` reuses a
    :func:`radynversion.engine.workers.model_spec` result.
    """
    st = settings_from(settings, overrides)
    spec_, net = spec if spec is not None else model_spec(default_model_for(model, profiles), device=device)
    source = check_profiles(profiles, partial=bool(input_options(net)["partial"]))
    samples = st.draws
    dims = sample_dims(profiles)
    if len(dims) > len(_LETTERS):
        raise ProfileSchemaError(f"{source}: {len(dims)} non-spectral dims; at most {len(_LETTERS)}")
    present = [ln for ln in LINES if ln.var in profiles.data_vars]
    shape = tuple(int(profiles[present[0].var].sizes[d]) for d in dims)
    n_pix = math.prod(shape)
    if st.return_samples:
        check_samples_size(n_pix, samples, net.n_x, st.max_samples_bytes)
    client = client if client is not None else _current_client()
    if client is not None:
        ensure_plugin(client, spec_)
    probe = _probe_profiles(profiles, dims, net, st.degrade) if st.precision == "auto" or st.compile else None
    rt = runtime_settings(spec_, st.precision, st.batch_size, client, probe, samples, st.compile, st.sampling)
    st = st.with_(precision=str(rt["precision"]), batch_size=int(rt["batch_size"]))
    sp_chunks = _normalise_chunks(profiles, dims, shape, chunks, regular,
                                  min_chunks=2 * _worker_threads(client))

    lines, arrays = [], []
    for ln in present:
        var = profiles[ln.var].transpose(*dims, ln.dim)
        lines.append(_Line(ln.var, ln.dim, np.asarray(profiles[ln.dim].values),
                           dict(profiles[ln.dim].attrs), dict(var.attrs)))
        target = {**dict(zip(dims, sp_chunks, strict=True)), ln.dim: -1}
        data = var.data
        if isinstance(data, da.Array):
            data = data.rechunk(tuple(target[d] for d in var.dims))
        else:
            data = var.chunk(target).data
        arrays.append(data)
    _warn_padding(sp_chunks, int(samples), int(rt["batch_size"]))
    starts = tuple(tuple(int(s) for s in np.cumsum((0, *c[:-1]))) for c in sp_chunks)
    params = BlockParams(
        dims=dims, shape=shape, starts=starts, lines=tuple(lines), source=source, settings=st,
        n_heights=int(net.height_Mm.numel()), store=None if store is None else str(store))
    spec_key = dask.delayed(spec_, name=f"radynversion-model-{spec_.sha256}")
    letters = _LETTERS[: len(dims)]
    index_args: list[Any] = []
    for i, c in enumerate(sp_chunks):
        index_args += [da.arange(shape[i], chunks=(c,), dtype=np.int64), letters[i]]
    line_args: list[Any] = []
    for k, arr in enumerate(arrays):
        line_args += [arr, letters + "wxyz"[k]]
    token = dask.base.tokenize(spec_.sha256, params, [a.name for a in arrays])
    blocks = da.blockwise(
        _invert_block, letters, *line_args, *index_args, spec_key, None, params, None,
        dtype=object, concatenate=True, meta=np.empty((0,) * len(dims), dtype=object),
        name=f"radyn-invert-{token}")

    run = RunSettings.from_settings(st, device=str(rt["device"]))
    name = str(net.metadata.get("path", "<in memory>")) if spec_.path is None else spec_.path
    schema = result_schema(profiles, net, name, spec_.sha256, run, dims)
    return Plan(blocks=blocks, dims=dims, shape=shape, chunks=sp_chunks, schema=schema,
                params=params, spec=spec_, net=net)


def invert(profiles: xr.Dataset, model: PosteriorModel | str | Path | None = None,
           settings: InversionSettings | Mapping[str, Any] | None = None, **kwargs: Any) -> xr.Dataset:
    """Invert a scan lazily: one Dask task per chunk, posterior quantiles per pixel.

    Parameters
    ----------
    profiles : xarray.Dataset
        In the profile schema (:mod:`radynversion.schema`), numpy- or Dask-backed, any
        non-spectral dims (``y``, ``x``, ``time``...). A wavelength axis split into several
        chunks is rechunked to one.
    model : PosteriorModel or path, optional
        The network (sent to the workers), a checkpoint every worker can read, or None for
        the packaged model.
    settings : InversionSettings or mapping, optional
        How to invert (:class:`radynversion.model.settings.InversionSettings`), as for
        :func:`radynversion.invert`: the same settings give the same numbers pixel for pixel,
        whatever the chunks and workers. ``precision="auto"`` is resolved on a worker (the
        fastest precision of its device whose error is at most a quarter of the quantiles'
        Monte Carlo error); ``compile=True`` compiles once per worker (10-40 s on CPU), then
        passes run 1.4-2x faster in bf16 and 1.0-1.2x in fp32, rounding slightly differently
        (the ``compiled`` attribute says which); worth it for scans of thousands of pixels.
    **kwargs
        Where to run: ``chunks`` (mapping dim -> size or -1: chunk sizes of the non-spectral
        dims; default the input's chunks, or about 4096 pixels per chunk for numpy-backed
        input), ``device`` (force the workers' device; default each worker's GPU if any, else
        CPU), ``client`` (where to resolve ``precision="auto"`` and register the model plugin;
        default the current client, if any: the result is computed by whatever scheduler
        computes it); and fields of :class:`InversionSettings` replacing ``settings``'
        (``samples=256``...).

    Returns
    -------
    xarray.Dataset
        Lazy (Dask-backed): ``log_ne``, ``log_T``, ``v`` ``(*dims, quantile, height)``,
        ``misfit``, ``peak``, ``mask`` ``(*dims)``; see the module docstring.

    Raises
    ------
    ProfileSchemaError, UnitsError
        The input breaks the profile schema.
    CheckpointError
        The model cannot be loaded.
    ConfigError
        A setting is unknown or refused.
    SelectionTooLargeError
        ``return_samples`` for too large a selection.

    Example
    -------
    >>> import radynversion  # registers ds.radyn
    >>> out = scan.radyn.invert(model="model.pt", samples=256)  # doctest: +SKIP
    >>> out.log_T.sel(quantile=0.5).compute()  # doctest: +SKIP
    """
    return plan_inversion(profiles, model, settings, **kwargs).dataset()
