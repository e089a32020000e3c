"""Training throughput: training samples per second of one optimiser step, at 1 and 2 threads.

One step is what :func:`radynversion.model.train` does per batch: the model's training losses
(for the conditional INN, the default: the flow's negative log-likelihood and the emulator's
L2; for the INN: forward pass, two reverse passes, the MMDs, reverse losses fully faded in) at
the :class:`~radynversion.model.TrainConfig` the model was trained with (default
``TrainConfig()`` for an untrained network), backward, the element-wise gradient clamp, and an
Adam step, on the packaged model (or ``--model``), with batches drawn from the shipped
training set (synthetic arrays if it cannot be read: the cost does not depend on the values).
Each thread count is timed in this process with ``torch.set_num_threads``; the FLOPs of a step
are counted with ``FlopCounterMode`` (matmuls of the forward and backward passes).

The other upstream cost, Lightweaver synthesis of the training set (atmospheres per
core-second, converged fraction), is ``benchmarks/synth.py``.

    python benchmarks/training.py --quick      # 3 timed steps per thread count
    python benchmarks/training.py --steps 30 --threads 1 2
    python benchmarks/training.py --device cuda

Prints one JSON object (the last line of stdout).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from _common import bench_model, device_choice, emit, log, machine, reference_arrays

from radynversion.config import from_toml
from radynversion.model import TrainConfig


def make_step(net, atm: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    """One optimiser step of ``train`` on a random batch of ``(atm, y)`` (a closure)."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    size = min(cfg.batch_size, atm.shape[0])

    def step() -> float:
        idx = torch.randperm(atm.shape[0], generator=gen, device=atm.device)[:size]
        losses = net.training_losses(atm[idx], y[idx], cfg, 1.0, gen)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        for p in params:
            if p.grad is not None:
                p.grad.clamp_(-cfg.grad_clamp, cfg.grad_clamp)
        opt.step()
        return float(losses["total"].detach())

    return step, size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="checkpoint (default: the packaged model, else an untrained one)")
    p.add_argument("--device", type=device_choice, default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--quick", action="store_true", help="3 timed steps per thread count")
    p.add_argument("--steps", type=int, default=20, help="timed steps per thread count (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (CPU)")
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="default: the batch size the model was trained with")
    p.add_argument("--max-seconds", dest="max_seconds", type=float,
                   help="stop timing a thread count after this long, at least one step (default 120; quick 15)")
    args = p.parse_args()
    steps = 3 if args.quick else args.steps
    max_s = args.max_seconds or (15.0 if args.quick else 120.0)
    net, info = bench_model(args.model, args.device)
    recorded = net.metadata.get("train_config") or ""
    cfg = from_toml(TrainConfig, recorded) if recorded else TrainConfig()
    if args.batch_size is not None:
        cfg = dataclasses.replace(cfg, batch_size=args.batch_size)
    atm_np, y_np, source = reference_arrays()
    dev = torch.device(args.device)
    atm = torch.as_tensor(atm_np, device=dev)
    y = torch.as_tensor(y_np, device=dev)
    if atm.shape[0] < cfg.batch_size:  # a small set: repeat it to fill a batch (cost depends on size only)
        reps = -(-cfg.batch_size // atm.shape[0])
        atm, y = atm.repeat(reps, 1), y.repeat(reps, 1)
    net.train()
    gen = torch.Generator(device=dev).manual_seed(0)
    step, size = make_step(net, atm, y, cfg, gen)

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    flops_step = counter.get_total_flops()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    runs = []
    thread_counts = args.threads if dev.type == "cpu" else [torch.get_num_threads()]
    before = torch.get_num_threads()
    try:
        for t in thread_counts:
            torch.set_num_threads(t)
            for _ in range(1 if args.quick else 2):
                step()
            sync()
            times: list[float] = []
            while len(times) < steps and (not times or sum(times) < max_s):
                t0 = time.perf_counter()
                loss = step()
                sync()
                times.append(time.perf_counter() - t0)
            med = float(np.median(times))
            runs.append({"threads": t, "steps": len(times), "step_ms_median": round(1e3 * med, 1),
                         "step_ms_min": round(1e3 * min(times), 1),
                         "samples_per_s": round(size / med, 1), "gflops": round(flops_step / med / 1e9, 2),
                         "loss_finite": bool(np.isfinite(loss))})
            log(f"{t} thread(s): {runs[-1]['samples_per_s']} samples/s")
    finally:
        torch.set_num_threads(before)
    out = {"benchmark": "training", "quick": bool(args.quick), "machine": machine(args.device),
           "device": args.device, **info, "data": source, "batch_size": size,
           "flops_per_step": flops_step, "flops_per_sample": flops_step / size, "runs": runs,
           "samples_per_s": {str(r["threads"]): r["samples_per_s"] for r in runs},
           "model_kind": net.kind,
           "note": "one optimiser step of train() (the model's training_losses at fade 1, backward, "
                   "gradient clamp, Adam); "
                   "samples/s = batch size / median step time; FLOPs = matmuls of forward + backward "
                   "(FlopCounterMode)"}
    emit(out)


if __name__ == "__main__":
    main()
