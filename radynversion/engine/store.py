"""Inversions written chunk by chunk to a Zarr store, resumable after a kill.

Layout (Zarr format 2, consolidated, one Zarr chunk per engine chunk):

* the result schema (:mod:`radynversion.model.result`, the same variables and attrs as the
  in-memory ``radynversion.invert``): ``log_ne``, ``log_T``, ``v`` ``(*dims, quantile,
  height)``, ``misfit``, ``peak``, ``mask`` ``(*dims)``, each with ``units``; coordinates
  ``quantile``, ``height`` and the input's coordinates on ``dims``; the input's attrs and the
  run's provenance (model path and sha256, package version, samples, quantiles, seed,
  precision, batch size, device...);
* the store's own attrs (:data:`STORE_ATTRS`): ``radynversion_store = "radynversion
  inversion"``, ``radynversion_run`` (JSON of everything that determines the data: resuming
  with anything else is refused), ``radynversion_complete`` (False until every chunk is
  written) and ``chunk_grid``;
* bookkeeping out of the user's view, in the subgroup ``bookkeeping`` (``xarray.open_zarr``
  reads only the root group): ``chunk_done (chunk)``, 1 once chunk ``k`` (C order over the
  chunk grid) is written. Stores written before kept it at the root; they still resume.

The store's metadata is created at once, in a temporary directory renamed into place, so a
store either does not exist or has all its metadata. Each chunk task writes its region of
every variable (its own Zarr chunk files, written atomically by Zarr), then the driver sets
``chunk_done[k]``; a resumed run skips the chunks marked done and recomputes the others, whose
results are bit-identical (:mod:`radynversion.model.posterior`), so the finished store equals
that of an uninterrupted run, byte for byte. A store that exists and is not ours is never
touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..datasets import store_digest
from ..errors import ConfigError, ProfileSchemaError, StoreError
from ..lines import LINES
from ..model.base import PosteriorModel
from ..model.checkpoint import default_model_for
from ..model.posterior import DEFAULT_MISFIT_SAMPLES, misfit_draws
from ..model.result import result_dataset
from ..model.settings import InversionSettings, settings_from
from ..schema import check_intensities
from .core import Plan, plan_inversion, write_region
from .workers import model_spec

__all__ = ["STORE_KIND", "STORE_ATTRS", "BOOKKEEPING_GROUP", "invert_to_zarr", "open_result", "check_output", "check_free_space", "estimate_store_bytes",
           "check_writable", "write_region", "chunk_status", "store_status", "store_digest"]

STORE_KIND = "radynversion inversion"
#: attrs of an inversion store beyond the result schema's (the store's own bookkeeping; the
#: CLI also records the cluster of each run, :data:`radynversion.engine.cluster.CLUSTER_ATTR`)
STORE_ATTRS = ("radynversion_store", "radynversion_complete", "radynversion_run", "chunk_grid",
               "radynversion_cluster")
#: subgroup of the store's bookkeeping arrays
BOOKKEEPING_GROUP = "bookkeeping"
_FLAG_CHUNK = 1024


def _flags_path(store: str | Path) -> Path:
    """The ``chunk_done`` array of a store (in its bookkeeping group; at the root in stores
    written before)."""
    path = Path(store) / BOOKKEEPING_GROUP / "chunk_done"
    return path if path.exists() else Path(store) / "chunk_done"


def chunk_status(store: str | Path) -> np.ndarray:
    """Boolean array, one per chunk (C order over the chunk grid): True once written."""
    import zarr

    return np.asarray(zarr.open_array(str(_flags_path(store)), mode="r")[:]) == 1


def store_status(store: str | Path) -> dict[str, Any]:
    """``{"complete": bool, "chunks_done": int, "chunks": int}`` of an inversion store."""
    import zarr

    attrs = dict(zarr.open_group(str(store), mode="r").attrs)
    done = chunk_status(store)
    return {"complete": bool(attrs.get("radynversion_complete", False)),
            "chunks_done": int(done.sum()), "chunks": int(done.size)}


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype.str}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _input_files(profiles: xr.Dataset, source: str) -> list[str]:
    """The file(s) ``profiles`` came from, as absolute paths (so that the same file named from
    another working directory is the same input); ``[source]`` for data not read from files."""
    files = profiles.attrs.get("source_files")
    if isinstance(files, str):
        files = [files]
    if not files:
        one = profiles.encoding.get("source") or profiles.attrs.get("source_file")
        files = [one] if one else []
    out = []
    for f in files:
        path = Path(str(f)).expanduser()
        out.append(str(path.resolve()) if path.exists() else str(f))
    return out or [source]


def _run_signature(plan: Plan, profiles: xr.Dataset) -> dict[str, Any]:
    """Everything that determines the store's data (compared on resume)."""
    p = plan.params
    st = p.settings
    return {
        "model_sha256": plan.spec.sha256,
        "samples": st.draws,
        "sampling": st.sampling,
        "quantiles": list(st.quantiles),
        "seed": st.seed,
        "batch_size": st.batch_size,
        "precision": st.precision,
        "compiled": st.compile,
        "device": plan.attrs["device"],
        "degrade": plan.attrs["degrade"],
        "misfit": st.misfit,
        "misfit_samples": st.round_trip_draws or None,
        "dims": list(plan.dims),
        "shape": list(plan.shape),
        "chunks": [list(c) for c in plan.chunks],
        # the data are not hashed (that would read the whole scan): the file(s) they came from
        # tell another scan of the same shape and tunings from this one
        "input_source": _input_files(profiles, p.source),
        "input_wavelengths_sha256": _sha(*[ln.wavelengths for ln in p.lines]),
        "input_metadata_sha256": _sha([(ln.var, ln.attrs, ln.wl_attrs) for ln in p.lines],
                                      # the files are compared as absolute paths, above
                                      {k: str(v) for k, v in profiles.attrs.items()
                                       if k not in ("source_files", "source_file")},
                                      [str(profiles[ln.var].dtype) for ln in LINES if ln.var in profiles]),
    }


def _template(plan: Plan, run: Mapping[str, Any]) -> tuple[xr.Dataset, dict]:
    """The store's Dataset (lazy zeros, the result schema's variables and attrs plus the
    store's own attrs) and its encoding."""
    from numcodecs import Blosc

    comp = Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE)
    arrays, encoding = {}, {}
    for name, spec in plan.schema.variables.items():
        chunks = plan.variable_chunks(spec)
        arrays[name] = da.zeros(tuple(sum(c) for c in chunks), dtype=spec.dtype, chunks=chunks)
        enc: dict[str, Any] = {"compressors": (comp,)}
        if spec.dtype.kind == "f":
            enc["_FillValue"] = np.nan
        encoding[name] = enc
    ds = result_dataset(arrays, plan.schema)
    for name in list(ds.coords):  # coordinates written at once, with only their CF encoding
        c = ds[name].compute()
        c.encoding = {k: v for k, v in c.encoding.items() if k in ("units", "calendar", "dtype")}
        ds = ds.assign_coords({name: c})
    ds.attrs.update({
        "radynversion_store": STORE_KIND,
        "radynversion_complete": False,
        "radynversion_run": json.dumps(run, sort_keys=True),
        "chunk_grid": [len(c) for c in plan.chunks],
    })
    return ds, encoding


def _create_flags(store: Path, n: int) -> None:
    """``bookkeeping/chunk_done``: one int8 flag per chunk, all 0."""
    import zarr

    group = zarr.open_group(str(store), mode="r+").require_group(BOOKKEEPING_GROUP)
    flags = group.create_array("chunk_done", shape=(n,), chunks=(max(1, min(n, _FLAG_CHUNK)),), dtype="int8",
                               fill_value=0, attributes={
                                   "long_name": "1 once the chunk (C order over the chunk grid) is completely "
                                                "written"})
    flags[:] = 0
    zarr.consolidate_metadata(str(store))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create(out: Path, plan: Plan, run: Mapping[str, Any]) -> None:
    tmpl, enc = _template(plan, run)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.creating-*"):  # left by a killed creation
        with contextlib.suppress(ValueError, OSError):
            pid = int(stale.name.rsplit("-", 1)[1])
            if pid == os.getpid() or not _alive(pid):
                shutil.rmtree(stale)
    tmp = out.with_name(f".{out.name}.creating-{os.getpid()}")
    try:
        tmpl.to_zarr(tmp, mode="w-", compute=False, encoding=enc, zarr_format=2, consolidated=True)
        _create_flags(tmp, plan.n_chunks)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exists(out: Path) -> bool:
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


def _write_target(out: Path) -> Path:
    """The directory written into: the store itself when it exists (resume), else the nearest
    existing ancestor of its parent (created folders and the store are made there)."""
    if _exists(out):
        return out
    target = out.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    return target


def check_writable(out: str | Path) -> None:
    """Refuse an output whose directory cannot be written, before any work starts (a probe
    folder is made and removed: permission bits, read-only mounts and quotas all show).

    ``out`` may lie in folders that do not exist yet: the nearest existing one is probed.

    Raises
    ------
    StoreError
        The folder is a file, or cannot be written (the message names both paths).
    """
    out = Path(out)
    target = _write_target(out)
    if not target.is_dir():
        raise StoreError(f"{out}: cannot be created, {target} is a file, not a directory; expected an "
                         "output path in a writable directory")
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=target)
        os.rmdir(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise StoreError(f"{out}: cannot write in {target} ({reason}); expected a writable output "
                         "directory (nothing was written)") from None


def estimate_store_bytes(n_pixels: int, n_quantiles: int, n_heights: int) -> int:
    """Upper estimate [bytes] of an inversion store of ``n_pixels`` pixels: the uncompressed
    float32 quantiles of the three variables, ``misfit``, ``peak``, ``ood_score`` and the
    booleans ``mask`` and ``trusted``."""
    per_pixel = 4 * (3 * int(n_quantiles) * int(n_heights) + 3) + 2
    return int(n_pixels) * per_pixel + 64 * 1024


def check_free_space(out: str | Path, nbytes: int) -> None:
    """Refuse to start when the file system of ``out`` has less than ``nbytes`` free.

    Raises
    ------
    StoreError
        Not enough free space (the estimate, uncompressed, is an upper bound).
    """
    out = Path(out)
    target = _write_target(out)
    try:
        free = shutil.disk_usage(target).free
    except OSError:  # cannot tell: let the writes report it
        return
    if free < nbytes:
        raise StoreError(f"{out}: needs about {nbytes / 1e9:.3g} GB (uncompressed estimate) but only "
                         f"{free / 1e9:.3g} GB are free on {target}; expected room for the output (free "
                         "space, choose another output, or fewer quantiles)")


def check_output(out: str | Path, overwrite: bool = False) -> bool:
    """Whether ``out`` is an existing inversion store to resume; False if it is absent (or,
    with ``overwrite``, an inversion store to be replaced).

    Raises
    ------
    StoreError
        ``out`` exists and is not a radynversion inversion store (never overwritten), or it
        (or the directory it would be created in) cannot be written.
    """
    out = Path(out)
    if not _exists(out):
        check_writable(out)
        return False
    _check_existing(out, None)
    check_writable(out)
    return not overwrite


#: run-signature entries that follow from another one (when that one differs, they are not
#: named in a mismatch: the user changed the other); see :func:`_explained`
_DERIVED_FROM = {"misfit_samples": "samples", "chunks": "shape"}


def _explained(key: str, stored: Mapping[str, Any], misfit_request: int | None) -> bool:
    """Whether the stored value of ``key`` differs from this run's only because the entry it
    derives from (:data:`_DERIVED_FROM`) differs: the round trip's draws are
    ``min(samples, --misfit-samples)``, so a store of 1024 samples holds 64 where a run of 16
    asks for 16, with the same --misfit-samples; chunks of another shape are other chunks."""
    if key == "misfit_samples":
        try:
            return stored.get(key) == misfit_draws(int(stored["samples"]), misfit_request)
        except (KeyError, TypeError, ValueError):
            return False
    return key in _DERIVED_FROM


def _check_existing(out: Path, run: Mapping[str, Any] | None,
                    misfit_request: int | None = DEFAULT_MISFIT_SAMPLES) -> dict[str, Any]:
    import zarr

    try:
        attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception as err:  # noqa: BLE001 - zarr raises many types for foreign paths
        raise StoreError(f"{out}: exists and is not a Zarr store ({type(err).__name__}), so not a radynversion "
                         "inversion store; expected a new path or an inversion store to resume: choose "
                         "another output (nothing was overwritten)") from None
    if attrs.get("radynversion_store") != STORE_KIND:
        raise StoreError(f"{out}: exists and is not a radynversion inversion store; expected a new path "
                         "or an inversion store to resume: choose another output (nothing was overwritten)")
    if run is None:
        return attrs
    try:
        stored = json.loads(attrs.get("radynversion_run", ""))
    except ValueError:
        raise StoreError(f"{out}: its radynversion_run attribute is unreadable; remove the store "
                         "or choose another output") from None
    run = dict(run)
    if "input_source" not in stored:  # written before stores recorded their input: not checkable
        run.pop("input_source", None)
    stored.setdefault("sampling", "plain")  # written before Sobol draws: plain Monte Carlo
    if stored != run:
        keys = sorted(k for k in set(stored) | set(run) if stored.get(k) != run.get(k))
        keys = [k for k in keys if not (_DERIVED_FROM.get(k) in keys and _explained(k, stored, misfit_request))]
        detail = "; ".join(f"{k}: store {stored.get(k)!r} vs now {run.get(k)!r}" for k in keys)
        raise StoreError(f"{out}: was made with other inputs or settings ({detail[:400]}); expected the "
                         "same options to resume it: rerun with them, choose another output, or replace "
                         "it (radynversion invert --overwrite)")
    return attrs


def _check_variables(out: Path, plan: Plan) -> None:
    """Refuse to resume a store that lacks variables this version writes (made by an older
    radynversion): its chunks could not be completed."""
    # the arrays themselves, not the consolidated metadata (which an edited store may still list)
    missing = sorted(name for name in plan.schema.variables if not (out / name / ".zarray").exists())
    if missing:
        raise StoreError(f"{out}: was made by an older radynversion (no {', '.join(missing)}); expected a store "
                         "this version can complete: replace it (radynversion invert --overwrite) or choose "
                         "another output")


def trust_summary(out: str | Path) -> dict[str, Any]:
    """How many pixels of a complete inversion store the model trusts
    (:mod:`radynversion.model.trust`): ``inverted_pixels``, ``trusted_pixels``,
    ``untrusted_pixels`` and ``trusted_fraction`` (of the inverted; None where the model
    carries no trust reference), read chunk by chunk from ``mask`` and ``trusted``."""
    import zarr

    group = zarr.open_group(str(out), mode="r")
    if "trusted" not in group or "mask" not in group:
        return {}
    mask, trusted = group["mask"], group["trusted"]
    n_inv = n_ok = 0
    step = max(1, mask.chunks[0]) if mask.ndim else 1
    for i in range(0, mask.shape[0] if mask.ndim else 1, step):
        sel = slice(i, i + step) if mask.ndim else ...
        m = np.asarray(mask[sel], dtype=bool)
        n_inv += int((~m).sum())
        n_ok += int((np.asarray(trusted[sel], dtype=bool) & ~m).sum())
    judged = not str(group.attrs.get("trust_reference", "")).startswith("none")
    return {"inverted_pixels": n_inv, "trusted_pixels": n_ok, "untrusted_pixels": n_inv - n_ok,
            "trusted_fraction": round(n_ok / n_inv, 4) if n_inv and judged else None}


def _stored_chunks(out: Path) -> dict[str, int] | None:
    """The chunk sizes (first chunk per dim) an inversion store was made with, if it says."""
    import zarr

    try:
        run = json.loads(dict(zarr.open_group(str(out), mode="r").attrs).get("radynversion_run", ""))
        return {str(d): int(c[0]) for d, c in zip(run["dims"], run["chunks"], strict=True) if c}
    except (ValueError, KeyError, TypeError):  # unreadable: the signature check will say so
        return None


def _check_not_all_masked(out: Path, plan: Plan, profiles: xr.Dataset) -> None:
    """A complete store in which every pixel is masked means the input held nothing invertible:
    refused, with the reason :func:`radynversion.schema.check_intensities` finds in the input
    (read once more, only then), else in general terms."""
    import zarr

    mask = np.asarray(zarr.open_array(str(out / "mask"), mode="r")[...])
    if mask.size and mask.all():
        try:
            check_intensities(profiles, plan.params.source)
        except ProfileSchemaError as err:
            raise ProfileSchemaError(f"{err} (the complete store {out} holds only NaN)") from None
        names = " or ".join(ln.var for ln in plan.params.lines)
        raise ProfileSchemaError(
            f"{plan.params.source}: no pixel could be inverted, each has NaN or inf in {names}, or no "
            f"positive intensity (the complete store {out} holds only NaN); expected finite, positive "
            "spectral radiances (Stokes I)")


def open_result(store: str | Path) -> xr.Dataset:
    """Open an inversion result written to Zarr (by ``radynversion invert``, or a lazy result's
    ``to_zarr``) as the user sees it: lazy, no bookkeeping.

    The result schema's variables, coordinates and attrs (:mod:`radynversion.model.result`)
    and, for an inversion store, its own attrs (:data:`STORE_ATTRS`); the ``chunk_done`` of
    stores written before it moved out of the root group is dropped.

    Raises
    ------
    StoreError
        ``store`` is not a readable Zarr store, or lacks the result's variables.
    """
    store = Path(store)
    try:
        ds = xr.open_zarr(store)
    except Exception as err:  # noqa: BLE001 - backends raise many types
        raise StoreError(f"{store}: not a readable Zarr store ({type(err).__name__}); expected the output "
                         "of radynversion invert") from None
    missing = [v for v in ("log_ne", "log_T", "v", "misfit") if v not in ds]
    if missing:
        raise StoreError(f"{store}: not an inversion result (missing {missing}); expected the output "
                         "of radynversion invert")
    return ds.drop_vars("chunk_done", errors="ignore")


def _finalise(out: Path) -> None:
    import zarr

    zarr.open_group(str(out), mode="r+").attrs["radynversion_complete"] = True
    zarr.consolidate_metadata(str(out))


def _execute(plan: Plan, todo: Sequence[int], out: Path, client: Any, progress: bool,
             num_workers: int | None) -> None:
    """Run the chunk tasks ``todo``, marking each chunk done as its task finishes."""
    import zarr
    from tqdm.auto import tqdm

    keys = plan.chunk_keys()
    wanted = [keys[k] for k in todo]
    graph = plan.blocks.__dask_graph__()
    flags = zarr.open_array(str(_flags_path(out)), mode="r+")
    bar = tqdm(total=len(wanted), desc=f"invert {out.name}", unit="chunk", disable=not progress,
               smoothing=0.05)

    def mark(result: Mapping[str, int]) -> None:
        flags[int(result["chunk"])] = 1
        bar.update(1)

    try:
        if client is not None:
            from distributed import as_completed

            futures = client.get(graph, wanted, sync=False)
            for fut in as_completed(futures, loop=client.loop):
                mark(fut.result())
                fut.release()
        else:
            import dask.threaded
            from dask.callbacks import Callback
            from dask.optimization import cull

            wanted_set = set(wanted)

            class _Mark(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001
                    if key in wanted_set:
                        mark(result)

            culled, _ = cull(dict(graph), wanted)
            with _Mark():
                dask.threaded.get(culled, wanted, num_workers=num_workers)
    finally:
        bar.close()


def invert_to_zarr(
    profiles: xr.Dataset,
    out: str | Path,
    model: PosteriorModel | str | Path | None = None,
    settings: InversionSettings | Mapping[str, Any] | None = None,
    *,
    chunks: Mapping[str, int | None] | None = None,
    device: str | None = None,
    client: Any = None,
    progress: bool = True,
    max_chunks: int | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Invert a scan into a Zarr store, chunk by chunk; resume an interrupted store.

    Parameters
    ----------
    profiles : xarray.Dataset
        The scan, in the profile schema (see :func:`radynversion.engine.invert`).
    out : path
        The Zarr store. Created if absent; if present it must be an inversion store made from
        the same input with the same model and settings, and only its missing chunks run
        (without ``chunks``, with the store's chunks, whatever the number of workers now).
    model, settings, chunks, device, **overrides
        As :func:`radynversion.engine.invert` (irregular chunks are made regular;
        ``return_samples`` is not stored).
    overwrite : bool
        Replace an existing inversion store (once the input, model and settings have passed
        every check) instead of resuming it; anything else at ``out`` is still refused.
    client : distributed.Client, optional
        Run on this cluster; default the threaded scheduler in this process.
    progress : bool
        Show a progress bar (chunks).
    max_chunks : int, optional
        Stop after this many chunks (incremental runs).
    num_workers : int, optional
        Threads of the threaded scheduler (no ``client``).

    Returns
    -------
    dict
        ``out``, ``chunks`` (total), ``written`` (this call), ``complete``, ``pixels``,
        ``seconds``, ``pixels_per_second`` (of this call).

    Raises
    ------
    StoreError
        ``out`` exists and is not ours, or was made with other inputs or settings; it cannot
        be written, or its file system has less room than the output needs (checked before
        any chunk runs).
    ProfileSchemaError, UnitsError
        The input breaks the schema or does not cover the model windows
        (:func:`radynversion.engine.core.check_profiles`), or no pixel could be inverted (all
        NaN, inf or non-positive: refused up front for in-memory data, once the store is
        complete for lazy data).
    """
    t0 = time.perf_counter()
    out = Path(out)
    resume = check_output(out, overwrite)  # a foreign or unwritable output is refused before anything else
    if resume and chunks is None:  # the store's chunks, not new ones for this cluster's size
        chunks = {d: c for d, c in (_stored_chunks(out) or {}).items() if d in profiles.dims} or None
    spec = model_spec(default_model_for(model, profiles), device=device)
    st = settings_from(settings, overrides)
    if st.return_samples:
        raise ConfigError(f"{out}: return_samples is not stored in Zarr; expected return_samples=False "
                          "(invert a small selection in memory with radynversion.invert to get samples)")
    plan = plan_inversion(profiles, model, st, chunks=chunks, device=device, client=client,
                          store=out.resolve(), regular=True, spec=spec)
    run = _run_signature(plan, profiles)
    n_pixels = int(np.prod(plan.shape))
    need = estimate_store_bytes(n_pixels, len(plan.params.settings.quantiles), plan.params.n_heights)
    if resume:
        _check_existing(out, run, st.misfit_samples)
        _check_variables(out, plan)
        left = 1.0 - float(chunk_status(out).mean()) if plan.n_chunks else 0.0
        check_free_space(out, int(need * left))
    else:
        if _exists(out):  # overwrite: an inversion store (check_output), replaced
            old = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            check_free_space(out, max(0, need - old))
            shutil.rmtree(out)
        check_free_space(out, need)
        with contextlib.suppress(OSError):
            out.rmdir()
        _create(out, plan, run)
    done = chunk_status(out)
    todo = [k for k in range(done.size) if not done[k]]
    if max_chunks is not None:
        todo = todo[: max(0, int(max_chunks))]
    if todo:
        _execute(plan, todo, out, client, progress, num_workers)
    done = chunk_status(out)
    complete = bool(done.all())
    if complete:
        _finalise(out)
        _check_not_all_masked(out, plan, profiles)
    sizes = [np.asarray(c) for c in plan.chunks]
    per_chunk = [int(np.prod([s[i] for s, i in zip(sizes, b, strict=True)]))
                 for b in np.ndindex(*(len(c) for c in plan.chunks))]
    pixels = int(sum(per_chunk[k] for k in todo))
    secs = time.perf_counter() - t0
    return {"out": str(out), "chunks": int(done.size), "written": len(todo), "complete": complete,
            "pixels": pixels, "seconds": round(secs, 3),
            "pixels_per_second": round(pixels / secs, 3) if secs > 0 else None}
