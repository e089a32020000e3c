"""The ``radynversion`` command line: one console script, one subcommand per workflow step.

``synth -> import-radyn -> train -> evaluate -> invert -> plot -> verify``; ``demo`` runs
the example end to end. Errors the package raises on purpose are printed as one line (no
traceback unless ``--debug``) and exit with status 2; errors of the environment (``OSError``:
a full disk, permissions) are printed as one line too and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import RadynversionError

__all__ = ["main"]


def _cmd_synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .config import load_toml
    from .engine.cluster import cluster_client, record_cluster
    from .synth.factory import SynthConfig, run_synthesis, shard_status

    cfg = load_toml(SynthConfig, args.config) if args.config else SynthConfig()
    overrides = {k: getattr(args, k) for k in ("n", "seed", "shard_size") if getattr(args, k) is not None}
    cfg = replace(cfg, **overrides)
    settings = _cluster_settings(args, cores=1)
    kwargs = dict(progress=not args.no_progress, max_shards=args.max_shards, log=args.log)
    run_synthesis(args.out, cfg, max_shards=0, progress=False)  # a store it cannot resume is refused first
    if shard_status(args.out).all() or args.max_shards == 0:
        stats = run_synthesis(args.out, cfg, **kwargs)  # nothing to do: no cluster
    else:
        with cluster_client(args.workers, 1, args.scheduler, args.slurm, settings=settings) as client:
            stats = run_synthesis(args.out, cfg, client=client, **kwargs)
        record_cluster(args.out, settings, _cluster_mode(args), args.scheduler, args.workers)
    print(json.dumps({"out": str(args.out), **stats}))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_toml
    from .datasets import training_set
    from .errors import ConfigError
    from .model.config import ModelConfig, TrainConfig, model_config_table
    from .model.train import train

    if args.config:
        try:
            text = Path(args.config).read_text()
        except OSError as err:
            raise ConfigError(f"{args.config}: cannot read config ({err.strerror})") from None
        mc = model_config_table(text, where=str(args.config))
    else:
        mc = ModelConfig()
    tc = load_toml(TrainConfig, args.config, table="train") if args.config else TrainConfig()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = _first_draws(training_set(args.data), args.first)
    res = train(data, args.out, mc, tc, progress=not args.no_progress, resume=not args.restart,
                device=args.device)
    last = {k: v[-1] for k, v in res.history.items() if v}
    print(json.dumps({"out": str(args.out), "model": str(res.model_path), "checkpoint": str(res.checkpoint),
                      "samples": int(data.sizes["sample"]), "last_epoch": last}, default=float))
    return 0


def _first_draws(data, first: int | None):  # noqa: ANN001, ANN202 - xarray.Dataset
    """The draws with sample label < ``first`` (all if None): a fixed subset of a store that may
    still be growing."""
    if first is None:
        return data
    from .datasets import sample_labels

    # first_draws: provenance, which held-out split a report is about
    return data.isel(sample=sample_labels(data) < first).assign_attrs(first_draws=int(first))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .evaluate import EvaluationSettings, cross_prior_lines, evaluate, open_population, write_report
    from .instrument import observing_program
    from .lines import LINES
    from .model import load_model
    from .model.preprocess import check_window, input_options

    data = _first_draws(open_population(args.data), args.first)
    net = load_model(args.model)
    tunings = observing_program(args.tunings) if args.tunings else None
    if tunings is not None and not input_options(net)["partial"]:  # refused up front, naming the file
        for ln in LINES:
            if ln.key not in tunings:
                raise ConfigError(f"{args.tunings}: no {ln.key!r} program; this model takes both lines "
                                  "(one line alone needs a model trained on partial coverage)")
            check_window(tunings[ln.key], ln, str(args.tunings))  # spans the window, enough points in it
    settings = EvaluationSettings(
        split=args.split, samples=args.samples, noise=args.noise, seed=args.seed, max_samples=args.max_samples,
        precision=args.precision, tunings=tunings, dn=args.dn)
    result = evaluate(net, data, settings)
    paths = write_report(result, args.out)
    s = result.summary
    print("\n".join(cross_prior_lines(s)))  # one line per parameter; the JSON summary last
    chrom = {v: s["parameters"][v].get("chromosphere", {}) for v in s["parameters"]}
    print(json.dumps({
        "report": str(paths["report"]), "figures": [str(paths[k]) for k in ("coverage", "errors", "pixel")],
        "evaluated": s["n_evaluated"],
        "forward_rms_median_pct": {k: round(f["rms_median_pct"], 3) for k, f in s["forward_rms"].items()},
        "round_trip_median_pct": round(s["round_trip"]["misfit_median_pct"], 3),
        "chromosphere": {v: {k: round(c[k], 3) for k in ("median_abs_error", "prior_median_abs_error",
                                                           "coverage68", "coverage90")}
                         for v, c in chrom.items() if c},
        "transition_region_height": {k: round(m, 3) for k, m in
                                     s["transition_region"].get("posterior", {}).items()},
        "acceptance_all_pass": s["acceptance"]["all_pass"],
    }))
    return 0


def _open_inversion(store: Path):  # noqa: ANN202 - xarray.Dataset
    """Open an inversion store written by ``radynversion invert``; a one-line error otherwise."""
    from .engine.store import open_result

    return open_result(store)


def _check_heights(heights: list[float], result, store: Path) -> None:  # noqa: ANN001 - xarray.Dataset
    """Refuse heights outside the result's height grid (maps show the nearest node: 20 Mm would
    silently be 10.5 Mm)."""
    import numpy as np

    from .errors import ConfigError

    grid = np.asarray(result["height"].values, dtype=float)
    lo, hi = float(grid.min()), float(grid.max())
    outside = [h for h in heights if not lo <= h <= hi]
    if outside:
        raise ConfigError(f"--heights {' '.join(f'{h:g}' for h in outside)}: outside the height grid of "
                          f"{store} ({lo:g} to {hi:g} Mm); expected heights [Mm] within it")


def _quiet_region(text: str | None) -> dict | None:
    """``--quiet y=0:20,x=40:64`` -> {"y": slice(0, 20), "x": slice(40, 64)} (pixel indices)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        try:
            dim, rng = part.split("=")
            lo, hi = rng.split(":")
            out[dim.strip()] = slice(int(lo), int(hi))
        except ValueError:
            from .errors import ConfigError

            raise ConfigError(f"--quiet {text!r}: expected e.g. 'y=0:20,x=40:64' (pixel index ranges of a "
                              "quiet-Sun region)") from None
    return out


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate
    from .engine.store import check_writable
    from .errors import StoreError
    from .io import open_observation

    if args.out.exists():
        raise StoreError(f"{args.out}: exists; expected a new file for the calibrated profiles (remove it or choose another -o)")
    check_writable(args.out)
    ds = open_observation(args.inputs)
    out = calibrate(ds, quiet=_quiet_region(args.quiet), method=args.method)  # pixel index ranges
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.to_netcdf(args.out)
    print(json.dumps({"out": str(args.out), "calibration": json.loads(out.attrs["calibration"])}))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plot import maps

    result = _open_inversion(args.store)
    _check_heights(args.heights, result, args.store)
    if not result.attrs.get("radynversion_complete", True):
        print(f"radynversion plot: warning: {args.store} is incomplete (an inversion still running or "
              "interrupted); unwritten pixels show as blank", file=sys.stderr)
    out_dir = args.out or Path(str(args.store).rstrip("/") + "_plots")
    out_dir.mkdir(parents=True, exist_ok=True)
    times = range(result.sizes["time"]) if "time" in result.dims else [None]
    written = []
    for t in times:
        name = "maps.png" if t is None else f"maps_t{t:04d}.png"
        maps(result, heights_Mm=tuple(args.heights), time=t, path=out_dir / name,
             title=f"{Path(args.store).name}" + ("" if t is None else f", time index {t}"))
        written.append(str(out_dir / name))
    print(json.dumps({"figures": written}))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import numpy as np

    from .engine.cluster import cluster_client
    from .engine.store import check_writable
    from .errors import StoreError
    from .io.observation import open_observation
    from .plot import verification
    from .synth.nlte import NLTEConfig
    from .verify import verify

    result = _open_inversion(args.store)
    observation = open_observation([str(p) for p in args.observation])
    nlte = NLTEConfig(depth_points=args.depth_points) if args.depth_points else NLTEConfig()
    out = args.out or Path(str(args.store).rstrip("/") + "_verify.nc")
    # the report's place is checked (and its folders made) before any NLTE work
    if out.is_dir():
        raise StoreError(f"{out}: is a directory; expected the path of the report file (netCDF)")
    check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.workers:
        with cluster_client(args.workers, 1) as client:
            report = verify(result, observation, pixels=args.pixels, nlte=nlte, client=client)
    else:
        report = verify(result, observation, pixels=args.pixels, nlte=nlte)
    report.to_netcdf(out)
    fig_path = Path(str(out).removesuffix(".nc") + ".png")
    verification(report, fig_path)
    print(json.dumps({
        "report": str(out), "figure": str(fig_path), "pixels": int(report.sizes["pixel"]),
        "median_misfit_inn": float(np.nanmedian(report["misfit"].values)) if report.sizes["pixel"] else None,
        "median_misfit_nlte": float(np.nanmedian(report["misfit_nlte"].values)) if report.sizes["pixel"] else None,
        "not_converged": int((report["status"].values != 0).sum()),
    }))
    return 0


def _cmd_import_radyn(args: argparse.Namespace) -> int:
    from .io.radyn import import_radyn

    ds = import_radyn(args.files, out=args.out, add_continuum=not args.no_continuum)
    print(json.dumps({"out": str(args.out), "samples": int(ds.sizes["sample"])}))
    return 0


def _parse_chunks(text: str | None) -> dict[str, int] | None:
    """``"y=64,x=64"`` -> ``{"y": 64, "x": 64}`` (``-1`` = whole dim)."""
    from .errors import ConfigError

    if not text:
        return None
    out: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            size = int(value)
        except ValueError:
            size = 0
        if not sep or not name.strip() or (size < 1 and size != -1):
            raise ConfigError(f"--chunks {text!r}: expected DIM=SIZE pairs such as 'y=64,x=64' "
                              "(SIZE >= 1, or -1 for the whole dim)")
        out[name.strip()] = size
    return out


def _cluster_settings(args: argparse.Namespace, cores: int):  # -> ClusterSettings
    """The ``--cluster`` TOML's settings; ``cores`` (threads per worker) and ``--gpus`` fill in
    what it leaves unset."""
    from dataclasses import replace

    from .engine.cluster import ClusterSettings

    settings = ClusterSettings.from_file(args.cluster) if args.cluster else ClusterSettings()
    if settings.cores is None:
        settings = replace(settings, cores=cores)
    if getattr(args, "gpus", False) and not settings.gpus:
        settings = replace(settings, gpus=1)
    return settings


def _cluster_mode(args: argparse.Namespace) -> str:
    if args.scheduler:
        return "scheduler"
    if args.slurm:
        return "slurm"
    if getattr(args, "gpus", False):
        return "gpus"
    return "threads" if args.workers == 0 else "local"


def _frame(text: str) -> str | float:
    """``--velocity-frame``: 'rest', 'quiet' or an offset in km/s."""
    try:
        return float(text)
    except ValueError:
        if text not in ("rest", "quiet"):
            raise argparse.ArgumentTypeError(f"{text!r}: expected 'rest', 'quiet' or an offset in km/s") from None
        return text


def _cmd_invert(args: argparse.Namespace) -> int:
    settings = _cluster_settings(args, cores=args.threads_per_worker)
    if args.slurm and args.print_job_script:
        from .engine.cluster import slurm_job_script

        print(slurm_job_script(settings))
        return 0
    import math

    from .engine.cluster import cluster_client, record_cluster
    from .engine.core import check_profiles
    from .engine.store import (
        check_free_space,
        check_output,
        estimate_store_bytes,
        invert_to_zarr,
        trust_summary,
    )
    from .engine.workers import model_spec
    from .errors import ConfigError
    from .io.observation import open_observation
    from .model.checkpoint import DEFAULT_MODEL_PATH, default_model_for, default_model_reason
    from .model.preprocess import input_options, sample_dims
    from .model.settings import InversionSettings
    from .velocity_frame import to_velocity_frame

    chunks = _parse_chunks(args.chunks)
    if args.samples is not None and args.samples < 1:
        raise ConfigError(f"--samples {args.samples}: expected a positive number of draws")
    if args.misfit_samples < 0:
        raise ConfigError(f"--misfit-samples {args.misfit_samples}: expected >= 0 (0 = every draw)")
    if not args.quantiles or any(not 0.0 <= q <= 1.0 for q in args.quantiles):
        raise ConfigError(f"--quantiles {' '.join(map(str, args.quantiles))}: expected values in [0, 1]")
    run = InversionSettings(samples=args.samples, sampling=args.sampling, quantiles=tuple(args.quantiles),
                            seed=args.seed, batch_size=args.batch_size, precision=args.precision,
                            misfit_samples=args.misfit_samples or None, compile=args.compile)
    # everything that can be refused is checked before a cluster starts
    resume = check_output(args.out, args.overwrite)
    ds = to_velocity_frame(open_observation(args.inputs, chunks=chunks or {}), args.velocity_frame)
    model = default_model_for(args.model, ds)
    if args.model is None and model != DEFAULT_MODEL_PATH:
        print(f"{default_model_reason(ds)}: inverting with the default model's variant for such data, "
              f"{model.name} (normalised per line, trained on partial coverage)", file=sys.stderr)
    _, net = model_spec(model)
    check_profiles(ds, partial=bool(input_options(net)["partial"]))
    if not resume:
        n_pixels = math.prod(int(ds.sizes[d]) for d in sample_dims(ds))
        check_free_space(args.out, estimate_store_bytes(n_pixels, len(args.quantiles),
                                                        int(net.height_Mm.numel())))
    kwargs = dict(model=model, settings=run, chunks=chunks, progress=not args.no_progress,
                  max_chunks=args.max_chunks, overwrite=args.overwrite)
    if args.workers == 0 and not (args.scheduler or args.slurm):
        stats = invert_to_zarr(ds, args.out, num_workers=args.threads_per_worker, **kwargs)
    else:
        with cluster_client(args.workers, args.threads_per_worker, args.scheduler, args.slurm,
                            args.gpus, settings) as client:
            stats = invert_to_zarr(ds, args.out, client=client, **kwargs)
    record_cluster(args.out, settings, _cluster_mode(args), args.scheduler, args.workers)
    if stats.get("complete"):  # an incomplete store's unwritten chunks would count as untrusted
        stats.update(trust_summary(args.out))
    stats["model"] = str(model)
    if args.model is None and model != DEFAULT_MODEL_PATH:
        stats["model_chosen_for"] = default_model_reason(ds)
    print(json.dumps(stats))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    res = run_demo(args.out, samples=args.samples, workers=args.workers, model=args.model,
                   progress=not args.no_progress)
    print(res["summary"])
    return 0


_CLUSTER_HELP = ("TOML of cluster settings (ClusterSettings): connect_timeout, worker_timeout and, for --slurm, "
                 "jobs, cores, memory, walltime, queue, account, job_extra_directives, job_script_prologue... "
                 "(see docs/clusters.md)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``radynversion`` command."""
    from ._version import __version__

    p = argparse.ArgumentParser(prog="radynversion", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"radynversion {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="synthesise a training set with Lightweaver (resumable)")
    s.add_argument("--n", type=int, help="number of atmospheres (default 1000, or the config's)")
    s.add_argument("--out", type=Path, required=True, help="output Zarr store")
    s.add_argument("--seed", type=int, help="seed of the set (each sample is seeded by (seed, index))")
    s.add_argument("--shard-size", dest="shard_size", type=int, help="samples per shard/chunk")
    s.add_argument("--config", type=Path, help="TOML file with a SynthConfig ([prior], [nlte] tables)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="LocalCluster workers (default: number of cores)")
    g.add_argument("--scheduler", help="address of a running Dask scheduler")
    g.add_argument("--slurm", action="store_true", help="start workers as SLURM jobs (dask-jobqueue; "
                   "settings in --cluster)")
    s.add_argument("--cluster", type=Path, metavar="FILE", help=_CLUSTER_HELP)
    s.add_argument("--max-shards", dest="max_shards", type=int, help="stop after this many shards")
    s.add_argument("--log", type=Path, help="append one line per atmosphere to this file")
    s.add_argument("--no-progress", dest="no_progress", action="store_true")
    s.set_defaults(func=_cmd_synth)

    t = sub.add_parser("train", help="train the INN or the conditional INN on a training set (resumable)")
    t.add_argument("--data", type=Path, help="training-set store (default: the shipped set)")
    t.add_argument("--out", type=Path, required=True, help="output directory (checkpoint, model.pt, loss curves)")
    t.add_argument("--config", type=Path, help="TOML with [model] (ModelConfig: the INN) or [cinn] (CINNConfig: the "
                   "conditional INN) and [train] (TrainConfig) tables")
    t.add_argument("--device", help="torch device (default: CUDA if available, else CPU)")
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--first", type=int, help="use only the first N draws (sample label < N): a fixed "
                   "training set while the store is still growing")
    t.add_argument("--no-progress", dest="no_progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="accuracy and calibration of a model on its held-out split or any population")
    ev.add_argument("--model", type=Path, help="checkpoint (default: the packaged model)")
    ev.add_argument("--data", type=Path, help="the population: a training-set store (Zarr), or a netCDF of "
                    "profiles and atmospheres over 'sample' (default: the shipped set)")
    ev.add_argument("--split", choices=["held-out", "all"], default="held-out",
                    help="the model's held-out split of --data (default), or all of it (a population "
                    "the model never trained on)")
    ev.add_argument("--out", type=Path, required=True, help="report JSON; figures and per-height metrics beside it")
    ev.add_argument("--samples", type=int, default=512, help="posterior draws per atmosphere")
    ev.add_argument("--noise", type=float, default=0.01, help="noise, fraction of the joint peak")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--precision", choices=["fp32", "bf16", "tf32", "auto"], default="fp32",
                    help="arithmetic of the posterior passes (default fp32: the same figures on every machine)")
    ev.add_argument("--all-samples", dest="split", action="store_const", const="all", help=argparse.SUPPRESS)
    ev.add_argument("--max-samples", dest="max_samples", type=int, help="evaluate at most this many")
    ev.add_argument("--first", type=int, help="use only the first N draws (sample label < N), for "
                    "the held-out split and the prior: a fixed evaluation while the store grows")
    ev.add_argument("--tunings", help="observe through this program instead of CRISP's default: a packaged "
                    "program's name (sparse, even, points, short_windows, halpha_only, ca8542_only, cut_and_gap) "
                    "or a TOML with halpha = [...] and/or ca8542 = [...], air wavelengths [Angstrom]")
    ev.add_argument("--dn", action="store_true", help="observe in DN with an unknown gain per line (uncalibrated "
                    "data: for a model normalised per line)")
    ev.set_defaults(func=_cmd_evaluate)

    ca = sub.add_parser("calibrate", help="scale DN scans to W m-2 Hz-1 sr-1 against the quiet Sun of the field "
                        "(uncalibrated data also invert as they are, with the per-line variant)")
    ca.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="FITS files or CRISPEX cubes (one per line) or netCDF/Zarr")
    ca.add_argument("-o", "--out", type=Path, required=True, help="calibrated netCDF file (profile schema)")
    ca.add_argument("--quiet", help="quiet-Sun region as pixel index ranges, e.g. 'y=0:20,x=40:64' (default: found "
                    "automatically from the far wings)")
    ca.add_argument("--method", choices=["far_wing", "profile"], default="far_wing",
                    help="what is matched to the model's quiet Sun (default far_wing)")
    ca.set_defaults(func=_cmd_calibrate)

    pl = sub.add_parser("plot", help="maps of an inversion store (median, 68 %% width, misfit) as PNG")
    pl.add_argument("store", type=Path, help="output of radynversion invert")
    pl.add_argument("--heights", type=float, nargs="+", default=[0.5, 1.0, 1.5], help="heights [Mm]")
    pl.add_argument("--out", type=Path, help="directory of the PNGs (default STORE_plots/)")
    pl.set_defaults(func=_cmd_plot)

    vf = sub.add_parser("verify", help="re-synthesise inferred atmospheres in NLTE and compare with the data")
    vf.add_argument("store", type=Path, help="output of radynversion invert")
    vf.add_argument("--observation", type=Path, nargs="+", required=True, help="the inverted observation file(s)")
    vf.add_argument("--pixels", type=int, default=4, help="check the N pixels with the largest INN misfit")
    vf.add_argument("--workers", type=int, default=0, help="LocalCluster workers (0: in this process)")
    vf.add_argument("--depth-points", dest="depth_points", type=int, help="NLTE depth points (default 200)")
    vf.add_argument("--out", type=Path, help="report (netCDF; the PNG goes beside it)")
    vf.set_defaults(func=_cmd_verify)

    r = sub.add_parser("import-radyn", help="import RADYN CDF files or the original training pickle")
    r.add_argument("files", nargs="+", type=Path, help="RADYN .cdf files and/or .pickle files")
    r.add_argument("--out", type=Path, required=True, help="output Zarr store")
    r.add_argument("--no-continuum", dest="no_continuum", action="store_true",
                   help="do not add RADYN's continuum point to the line intensities (the original export added it)")
    r.set_defaults(func=_cmd_import_radyn)

    v = sub.add_parser("invert", help="invert a scan into a Zarr store of posterior quantiles (resumable)")
    v.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="netCDF file or Zarr store in the profile schema, FITS files, or CRISPEX "
                        ".icube/.fcube cubes (with their spectfiles, found beside them or given here)")
    v.add_argument("-o", "--out", type=Path, required=True,
                   help="output Zarr store (resumed if it exists, with the same options)")
    v.add_argument("--overwrite", action="store_true",
                   help="replace an existing inversion store instead of resuming it (never anything else)")
    v.add_argument("--model", type=Path, help="model checkpoint (default: the packaged model)")
    v.add_argument("--samples", type=int, default=None,
                   help="posterior draws per pixel (default: 640 with --sampling sobol, 1024 with plain; "
                        "equally accurate quantile maps)")
    v.add_argument("--sampling", choices=["sobol", "plain"], default="sobol",
                   help="latent draws: randomised Sobol points (default) or plain Monte Carlo draws")
    v.add_argument("--quantiles", type=float, nargs="+", default=[0.05, 0.16, 0.5, 0.84, 0.95],
                   help="posterior quantiles (default 0.05 0.16 0.5 0.84 0.95)")
    v.add_argument("--seed", type=int, default=0, help="seed of the draws (per pixel: seed and pixel index)")
    v.add_argument("--velocity-frame", dest="velocity_frame", default="rest", type=_frame,
                   help="zero velocity: 'rest' (the lines' laboratory air wavelengths, default), 'quiet' (the "
                        "median line-core position of the quiet pixels of the field, per line) or an offset in "
                        "km/s (positive = redshift); recorded in the output's attrs")
    v.add_argument("--chunks", help="chunks of the non-spectral dims, e.g. 'y=64,x=64' (default: the "
                   "input's, cut to at most 4096 pixels and at least two chunks per worker thread)")
    v.add_argument("--batch-size", dest="batch_size", type=int,
                   help="rows (pixels x samples) per network pass (default 2048 on CPU, 65536 on GPU)")
    v.add_argument("--misfit-samples", dest="misfit_samples", type=int, default=64,
                   help="draws per pixel in the round-trip misfit (default 64; 0 = every draw)")
    v.add_argument("--precision", choices=["auto", "fp32", "tf32", "bf16"], default="auto",
                   help="arithmetic (auto: bf16 on GPUs and on CPUs with AMX or AVX-512 BF16 where its error is under a quarter of "
                        "the quantiles' sampling error, else fp32)")
    v.add_argument("--compile", action="store_true",
                   help="run the network passes through torch.compile: each worker compiles once (10-40 s), "
                        "then bf16 passes run 1.4-2x faster on AMX CPUs, ~1.04x with AVX-512 BF16 (fp32 1.0-1.2x); "
                        "for large scans")
    g = v.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores / "
                   "threads per worker; 0 = no cluster, threads in this process)")
    g.add_argument("--scheduler", help="address of a running Dask scheduler")
    g.add_argument("--slurm", action="store_true", help="start workers as SLURM jobs (dask-jobqueue)")
    v.add_argument("--threads-per-worker", dest="threads_per_worker", type=int, default=1,
                   help="threads per worker (default 1)")
    v.add_argument("--gpus", action="store_true",
                   help="one worker per GPU (dask-cuda LocalCUDACluster; with --slurm one GPU per job)")
    v.add_argument("--cluster", type=Path, metavar="FILE", help=_CLUSTER_HELP)
    v.add_argument("--print-job-script", dest="print_job_script", action="store_true",
                   help="with --slurm: print the job script that would be submitted, and exit")
    v.add_argument("--max-chunks", dest="max_chunks", type=int, help="stop after this many chunks")
    v.add_argument("--no-progress", dest="no_progress", action="store_true")
    v.set_defaults(func=_cmd_invert)

    d = sub.add_parser("demo", help="invert the example scan with the default model on a local Dask cluster")
    d.add_argument("--out", type=Path, default=Path("radynversion-demo"), help="output directory")
    d.add_argument("--samples", type=int, default=64, help="posterior draws per pixel (1024 for science)")
    d.add_argument("--workers", type=int, default=2, help="Dask workers (one thread each)")
    d.add_argument("--model", type=Path, help="checkpoint (default: the packaged model)")
    d.add_argument("--no-progress", dest="no_progress", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, RadynversionError):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an option the subcommand does not know is that subcommand's usage error
    (its usage, exit status 2), not the top-level parser's."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        action.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radynversion`` console script."""
    args = _parse(argv)
    try:
        return int(args.func(args) or 0)
    except RadynversionError as err:
        if args.debug:
            raise
        print(f"radynversion {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment (disk full, permissions, a vanished file): not a bug
        if args.debug:
            raise
        print(f"radynversion {args.command}: error: {_one_line(err)} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"radynversion {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
