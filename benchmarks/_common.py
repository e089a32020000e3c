"""Helpers shared by the benchmark scripts (imported as ``_common`` by ``benchmarks/*.py``).

* :func:`machine`, :func:`emit`: what the figures came from, and the one-line JSON summary
  every script prints last;
* :func:`bench_model`, :func:`model_file`: the network to time (``--model PATH``, else the
  packaged model, else an untrained one of the default architecture: speed does not depend on
  the weights);
* :func:`flops_per_sample`: the model's FLOPs per draw, counted from the module with
  ``torch.utils.flop_counter.FlopCounterMode`` (2 x MACs of every Linear layer);
* :func:`matmul_rate`, :func:`worker_matmul_rates`: dense matmul FLOP rates, in this process
  or on every Dask worker at once (the engine's own processes and thread settings);
* :func:`engine_client`, :class:`RSSSampler`: a warm LocalCluster with the model loaded on
  every worker, and the summed resident memory of the client and its workers during a run;
* :func:`synthetic_scan`, :func:`tiled_example_scan`: scans in the profile schema.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

C_KMS = 299792.458

#: rows of the layer-shaped matmul (the limit), and the large square matmul (M, K, N)
LAYER_ROWS = 8192
SQUARE_SHAPE = (2048, 2048, 2048)


# -- reporting ------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine the figures come from (CPU model, cores, torch, load average, GPU)."""
    out: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        out["load_average_1min"] = round(os.getloadavg()[0], 2)
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def emit(out: dict[str, Any]) -> None:
    """Print ``out`` as one line of JSON: the last line of a script's stdout."""
    sys.stdout.flush()
    print(json.dumps(out, default=_json_default), flush=True)


def log(msg: str) -> None:
    """Progress on stderr (stdout is kept for the JSON summary)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def device_choice(value: str) -> str:
    """``--device`` value: ``cpu`` or ``cuda[:N]`` (refused when CUDA is absent)."""
    if value != "cpu" and not value.startswith("cuda"):
        raise SystemExit(f"--device {value}: expected cpu or cuda[:N]")
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {value}: torch sees no CUDA device here")
    return value


def precisions_for(device: str, requested: Sequence[str] | None = None) -> list[str]:
    """Precisions to time: the requested ones, else fp32 and those faster than fp32 on the
    device (:func:`radynversion.model.precision.reduced_precisions`: tf32 and bf16 on CUDA,
    bf16 on CPUs with AMX or AVX-512 BF16)."""
    from radynversion.model.precision import reduced_precisions

    if requested:
        return list(requested)
    return ["fp32", *sorted(reduced_precisions(device), key=["tf32", "bf16"].index)]


# -- the model ------------------------------------------------------------------------------
def _synthetic_reference(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Atmospheres ``(n, 150)`` and normalised profiles ``(n, 60)`` of plausible ranges."""
    from radynversion.model import normalise_profiles

    rng = np.random.default_rng(seed)
    h = 50
    atm = np.concatenate([rng.normal(11.5, 1.0, (n, h)), rng.normal(4.5, 0.8, (n, h)),
                          rng.normal(0.0, 1.0, (n, h))], axis=1).astype(np.float32)
    y, _ = normalise_profiles(synthetic_scan(1, n, seed=seed))
    return atm, y


def reference_arrays(n: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Training-like arrays ``(atm (N, 150), y (N, 60), source)``: the shipped training set
    (converged samples, preprocessed as training does), else synthetic ones."""
    from radynversion.lines import LINES
    from radynversion.model import atmosphere_to_array, normalise_profiles

    try:
        from radynversion.datasets import training_set

        ds = training_set()
        if n is not None:
            ds = ds.isel(sample=slice(0, n))
        fwhm = {ln.key: ln.crisp_fwhm_A for ln in LINES}
        y, _ = normalise_profiles(ds, fwhm_A=fwhm)
        atm = atmosphere_to_array(ds)
        ok = np.isfinite(y).all(axis=1) & np.isfinite(atm).all(axis=1)
        if ok.sum() >= 16:
            return atm[ok].astype(np.float32), y[ok].astype(np.float32), f"shipped training set ({int(ok.sum())} samples)"
    except Exception as err:  # noqa: BLE001 - the set may be absent or being written
        log(f"training set unusable for standardisation ({type(err).__name__}: {err}); synthetic stats")
    atm, y = _synthetic_reference(n or 256)
    return atm, y, "synthetic profiles and atmospheres"


def bench_model(path: str | Path | None = None, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The network to time and a description of it.

    ``path`` if given; else the packaged model (:func:`radynversion.model.load_model`) if its
    file exists; else an untrained network of the default architecture
    (``RadynversionINN(ModelConfig())``, CRISP instrument FWHMs) standardised on
    :func:`reference_arrays`: the speed of a pass does not depend on the weights.
    """
    from radynversion.lines import LINES
    from radynversion.model import DEFAULT_MODEL_PATH, ModelConfig, RadynversionINN, load_model

    if path is not None:
        net = load_model(path, map_location=device)
        info = {"model": str(path), "model_trained": True}
    elif DEFAULT_MODEL_PATH.exists():
        net = load_model(None, map_location=device)
        info = {"model": str(DEFAULT_MODEL_PATH), "model_trained": True}
    else:
        net = RadynversionINN(ModelConfig(), fwhm_A={ln.key: ln.crisp_fwhm_A for ln in LINES})
        atm, y, source = reference_arrays()
        net.set_standardisation(atm, y)
        net = net.to(device)
        info = {"model": "untrained default architecture", "model_trained": False,
                "model_note": f"no packaged model at {DEFAULT_MODEL_PATH}: an untrained "
                              f"RadynversionINN(ModelConfig()) standardised on the {source}; speed does "
                              "not depend on the weights"}
    info["model_parameters"] = int(sum(p.numel() for p in net.parameters()))
    return net.eval(), info


def model_file(net: Any, info: dict[str, Any], folder: Path) -> Path:
    """A checkpoint file of ``net`` every worker can read: its own file, or one written to
    ``folder``."""
    from radynversion.model import save_checkpoint

    if info.get("model_trained") and Path(info["model"]).is_file():
        return Path(info["model"])
    return save_checkpoint(Path(folder) / "bench_model.pt", net.cpu())


def flops_per_sample(net: Any, samples: int = 1024) -> dict[str, float]:
    """Matmul FLOPs per draw of the sampling pass the engine runs (``reverse``:
    :meth:`sample_pixels` on one pixel's ``samples`` draws, so work done once per pixel, the
    context's part of the couplings' first layers, is spread over its draws; the context
    itself, :meth:`condition`, is once per pixel and not counted) and of the emulator pass
    (``forward``: :meth:`emulate`, the round trip), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on ``net`` itself (2 x MACs of all Linear
    layers; element-wise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from radynversion.model.kernels import unfused

    dev = net.device
    # the counter knows aten's matmuls, not the fused oneDNN op: count the same layers unfused
    with torch.inference_mode(), unfused():
        ctx = net.condition(torch.full((1, net.n_y), 0.5, device=dev))
        z = torch.zeros(1, samples, net.n_z, device=dev)
        atm = net.x_mean.expand(samples, -1).clone()
        out = {}
        for name, fn in (("reverse", lambda: net.sample_pixels(ctx, z)), ("forward", lambda: net.emulate(atm))):
            with FlopCounterMode(display=False) as counter:
                fn()
            out[name] = counter.get_total_flops() / samples
    return out


def layer_shape(net: Any, rows: int = LAYER_ROWS) -> tuple[int, int, int]:
    """``(rows, K, N)`` of the Linear layer shape that carries most of ``net``'s matmul FLOPs
    (``K x N`` summed over the layers of that shape: the subnets' hidden layers)."""
    weight: dict[tuple[int, int], int] = {}
    for mod in net.modules():
        if isinstance(mod, torch.nn.Linear):
            key = (mod.in_features, mod.out_features)
            weight[key] = weight.get(key, 0) + mod.in_features * mod.out_features
    k, n = max(weight, key=lambda key: weight[key])
    return int(rows), int(k), int(n)


def sample_flops(flops: dict[str, float], samples: int, misfit_draws: int) -> float:
    """Model FLOPs per posterior draw: the reverse pass, plus the forward pass of the round
    trip for the ``misfit_draws`` of every ``samples`` draws that take part in it."""
    return flops["reverse"] + flops["forward"] * misfit_draws / samples


# -- the machine's limit --------------------------------------------------------------------
def matmul_rate(shape: Sequence[int], seconds: float = 2.0, rounds: int = 4, device: str = "cpu",
                precision: str = "fp32", threads: int | None = None) -> dict[str, float]:
    """FLOP rate of ``torch.mm`` of ``(M, K) @ (K, N)`` float32 operands.

    Runs for about ``seconds`` in ``rounds`` windows. Returns ``{"sustained": total FLOPs /
    total time, "peak": best window, "per_cpu_second": total FLOPs / CPU time of the calling
    thread}`` [FLOP/s]; the last does not depend on the share of the cores that other jobs
    leave (on CUDA it is meaningless). ``precision`` as the engine's
    (:func:`radynversion.model.posterior.precision_context`: tf32 or bf16 autocast on CUDA);
    ``threads`` sets torch's intra-op threads for the call (restored after).
    """
    from radynversion.model.posterior import precision_context

    m, k, n = (int(v) for v in shape)
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(m, k, generator=gen, device=dev)
    b = torch.randn(k, n, generator=gen, device=dev)
    flop = 2.0 * m * k * n
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with torch.inference_mode(), precision_context(precision, dev):
            for _ in range(2):
                torch.mm(a, b)
            sync()
            total_t, total_n, peak = 0.0, 0, 0.0
            cpu0 = time.thread_time()
            for _ in range(rounds):
                count, t0 = 0, time.perf_counter()
                while True:
                    torch.mm(a, b)
                    count += 1
                    if dev.type == "cuda" and count % 16:
                        continue
                    sync()
                    dt = time.perf_counter() - t0
                    if dt >= seconds / rounds:
                        break
                total_t += dt
                total_n += count
                peak = max(peak, count * flop / dt)
            cpu = time.thread_time() - cpu0
    finally:
        torch.set_num_threads(before)
    return {"sustained": total_n * flop / total_t, "peak": peak,
            "per_cpu_second": total_n * flop / cpu if cpu > 0 else math.nan}


def _worker_rate(shape: Sequence[int], seconds: float, device: str, precision: str, start_at: float) -> dict:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    rate = matmul_rate(shape, seconds, device=device, precision=precision)
    rate["threads"] = torch.get_num_threads()
    return rate


def worker_matmul_rates(client: Any, shape: Sequence[int], seconds: float = 2.0, device: str = "cpu",
                        precision: str = "fp32", workers: Sequence[str] | None = None) -> dict[str, float]:
    """Matmul FLOP rate of ``workers`` (default all) of ``client``'s cluster, measured on all
    of them at once, each in one of its task threads with its own torch thread settings (as
    the engine's chunk tasks run). Returns the summed ``sustained`` and ``peak`` rates
    [FLOP/s], the mean ``per_cpu_second`` rate of one worker thread, and the per-worker thread
    count."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    addrs = list(workers or client.scheduler_info()["workers"])
    start_at = time.time() + 0.5  # start together
    futs = [client.submit(_worker_rate, tuple(shape), seconds, device, precision, start_at,
                          workers=[w], allow_other_workers=False, pure=False) for w in addrs]
    res = client.gather(futs)
    return {"sustained": sum(r["sustained"] for r in res), "peak": sum(r["peak"] for r in res),
            "per_cpu_second": float(np.mean([r["per_cpu_second"] for r in res])),
            "workers": len(res), "threads_per_worker": res[0]["threads"]}


def process_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (all their threads)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(Exception):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


# -- clusters and memory --------------------------------------------------------------------
@contextlib.contextmanager
def engine_client(workers: int, threads: int, model_path: Path, device: str = "cpu") -> Iterator[Any]:
    """A LocalCluster of ``workers`` x ``threads`` (as ``radynversion invert`` starts it) and a
    client, with the model loaded and warmed up on every worker before it is yielded."""
    from distributed import Client

    from radynversion.engine.cluster import local_cluster
    from radynversion.engine.core import ensure_plugin
    from radynversion.engine.workers import model_spec

    with local_cluster(workers, threads) as cluster, Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(workers)
        ensure_plugin(client, model_spec(model_path, device=device)[0])
        yield client


def cluster_pids(client: Any) -> list[int]:
    """Process ids of the client (this process, with the scheduler and nannies) and of every
    worker."""
    return [os.getpid(), *client.run(os.getpid).values()]


class RSSSampler:
    """Sum of the resident set sizes of ``pids``, sampled every ``interval`` s in a thread
    while the context is open: ``peak`` and ``start`` [bytes]."""

    def __init__(self, pids: Sequence[int], interval: float = 0.05) -> None:
        import psutil

        self._procs = [psutil.Process(p) for p in pids]
        self.interval = interval
        self.peak = 0
        self.start = self._total()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        total = 0
        for p in self._procs:
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


# -- scans ----------------------------------------------------------------------------------
def synthetic_scan(ny: int, nx: int, seed: int = 0) -> Any:
    """Gaussian absorption/emission lines on the fine synthesis grids [W / (m2 Hz sr)], in the
    profile schema over ``(y, x)``."""
    from radynversion.lines import LINES
    from radynversion.schema import RADIANCE_PER_HZ, profile_dataset

    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, size=(ny * nx, 3))
    wls, ints = {}, {}
    for k, ln in enumerate(LINES):
        wl = ln.synth_wavelengths()
        depth = 0.8 - 1.2 * p[:, 1:2] ** 2
        width = 0.3 + 0.2 * p[:, 0:1] + 0.1 * k
        shift = ln.center_air_A * (60.0 * p[:, 2:3] - 20.0) * 0.5 / C_KMS
        prof = 3e-8 * (1.0 + 0.2 * k) * (1.0 - depth * np.exp(-(((wl - ln.center_air_A - shift) / width) ** 2)))
        wls[ln.key] = wl
        ints[ln.key] = prof.reshape(ny, nx, wl.size).astype(np.float32)
    ds = profile_dataset(wls, ints, RADIANCE_PER_HZ, dims=("y", "x"))
    return ds.assign_coords(y=("y", np.arange(ny) * 0.057, {"units": "arcsec"}),
                            x=("x", np.arange(nx) * 0.057, {"units": "arcsec"}))


def example_profiles() -> Any:
    """The example scan (:func:`radynversion.datasets.example_scan`, 64 x 64 CRISP pixels) in
    the profile schema, in memory."""
    from radynversion.datasets import example_scan
    from radynversion.io import open_observation

    return open_observation(example_scan()).load()


def tiled_example_scan(size: int) -> Any:
    """The example scan's first time step tiled to ``size`` x ``size`` pixels over ``(y, x)``,
    in the profile schema (its wavelengths and units), in memory."""
    from radynversion.lines import LINES
    from radynversion.schema import profile_dataset

    base = example_profiles()
    wls, ints, unit = {}, {}, None
    for ln in LINES:
        var = base[ln.var].isel({d: 0 for d in base[ln.var].dims if d not in (ln.dim, "y", "x")})
        arr = var.transpose("y", "x", ln.dim).values
        reps = (math.ceil(size / arr.shape[0]), math.ceil(size / arr.shape[1]), 1)
        ints[ln.key] = np.ascontiguousarray(np.tile(arr, reps)[:size, :size])
        wls[ln.key] = base[ln.dim].values
        unit = var.attrs["units"]
    ds = profile_dataset(wls, ints, unit, dims=("y", "x"))
    return ds.assign_coords(y=("y", np.arange(size)), x=("x", np.arange(size)))
