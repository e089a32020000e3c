"""Training of the invertible network on a training set (Osborne, Armstrong & Fletcher 2019).

:func:`train` selects the usable samples (``status == 0``, finite profiles and atmosphere),
preprocesses them exactly as :func:`radynversion.model.invert` will preprocess observations
(unit conversion, Gaussian instrument degradation, interpolation onto the model windows,
joint-peak normalisation), leaves out the evaluation split (:func:`evaluation_split`, by sample
label), holds out a validation split of the rest by a seeded permutation, and minimises the
model's objective (:func:`radynversion.model.losses.inn_losses` for the INN, maximum likelihood
:func:`radynversion.model.cinn.cinn_losses` for the conditional INN) with Adam, element-wise
gradient clamping and a step decay of the learning rate.

``out_dir`` receives, after every ``checkpoint_every`` epochs, ``checkpoint.pt`` (model +
optimiser state + history: rerunning :func:`train` with the same data and configs continues
from it) and ``loss_curves.png``; at the end ``model.pt`` (model only, for
:func:`radynversion.model.load_model`). All randomness is drawn from generators seeded by
``(seed, epoch)``, so an interrupted and resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from ..config import from_toml, to_toml
from ..datasets import evaluation_split, sample_labels, source_label, usable_samples
from ..errors import CheckpointError, ConfigError, ProfileSchemaError
from ..lines import LINES
from ..schema import source_name
from .base import PosteriorModel
from .checkpoint import MODEL_KINDS, arrays_sha256, read_checkpoint, save_checkpoint
from .config import CINNConfig, ModelConfig, TrainConfig
from .preprocess import atmosphere_to_array, normalise_profiles
from .sampling import ObservedSampling
from .trust import build_trust_reference

__all__ = ["TrainResult", "usable_samples", "sample_labels", "evaluation_split", "train", "plot_history",
           "best_epoch_parts", "population_weights"]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
PLOT_NAME = "loss_curves.png"
_VAL_STREAM = 2**31 - 1  # generator stream of the validation draws
#: stream (within an epoch's seed) of torch's global RNG during the epoch: dropout layers
#: draw from it, not from the seeded generators
_GLOBAL_STREAM = 2**31 - 2


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : PosteriorModel
        The trained network (eval mode, on the training device).
    history : dict of str -> list of float
        Per-epoch ``epoch``, ``lr``, ``fade``, ``seconds``, ``train_<loss>`` and ``val_<loss>``
        for every loss in the model's ``loss_names`` and ``total``.
    checkpoint : Path
        The resumable checkpoint.
    model_path : Path
        The model-only checkpoint.
    """

    model: PosteriorModel
    history: dict[str, list[float]]
    checkpoint: Path
    model_path: Path


def _stream_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)


def plot_history(history: dict[str, list[float]], path: str | Path) -> Path:
    """Loss curves (train solid, validation dashed) as a PNG at ``path``: components that stay
    positive on a log scale; those that go negative (a log-likelihood) on a linear one beside."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = np.asarray(history.get("epoch", []))
    names = [k.removeprefix("train_") for k in history if k.startswith("train_")]
    curves = {n: {split: np.asarray(history.get(f"{split}_{n}", []), dtype=float)
                  for split in ("train", "val")} for n in names}
    signed = [n for n in names if any(np.any(c <= 0) for c in curves[n].values() if c.size)]
    fig = Figure(figsize=(12 if signed else 8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if signed else 1, squeeze=False)[0]
    for i, name in enumerate(names):
        ax = axes[1] if name in signed else axes[0]
        for split, style in (("train", "-"), ("val", "--")):
            vals = curves[name][split]
            if vals.size:
                ax.plot(epochs[: vals.size], vals, style, color=f"C{i}", label=f"{split} {name}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss (unweighted components; total weighted)")
    if signed:
        axes[1].set_ylabel("loss (linear scale)")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize="small", ncol=2)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


#: ``keep_best`` selection of a model without ``best_epoch_parts``: everything at the epoch of
#: the lowest validation total
_WHOLE_MODEL: dict[str, tuple[str, ...]] = {"total": ()}


def best_epoch_parts(model: PosteriorModel) -> dict[str, tuple[str, ...]]:
    """Which validation loss selects the kept epoch of which weights (``keep_best``).

    Parameters
    ----------
    model : PosteriorModel
        A model may declare ``best_epoch_parts``: validation loss name -> state-dict key
        prefixes. Exactly one part has no prefixes and takes every key no other part claims.

    Returns
    -------
    dict of str -> tuple of str
        The model's parts, or ``{"total": ()}``: the whole model at the epoch of its lowest
        validation total (the INN, whose losses all depend on every weight).

    Example
    -------
    >>> from radynversion.model import CINNConfig, ConditionalINN, RadynversionINN
    >>> best_epoch_parts(ConditionalINN(CINNConfig(n_blocks=1)))
    {'nll': (), 'forward_l2': ('emulator.',)}
    >>> best_epoch_parts(RadynversionINN())
    {'total': ()}
    """
    parts = dict(getattr(model, "best_epoch_parts", None) or _WHOLE_MODEL)
    if sum(1 for prefixes in parts.values() if not prefixes) != 1:
        raise ConfigError(f"{type(model).__name__}.best_epoch_parts = {parts}; expected exactly one "
                          "part without key prefixes (the rest of the weights)")
    return parts


def _split_state(state: dict[str, torch.Tensor], parts: dict[str, tuple[str, ...]]
                 ) -> dict[str, dict[str, torch.Tensor]]:
    """``state`` split into the parts of :func:`best_epoch_parts` (detached CPU copies)."""
    rest = next(name for name, prefixes in parts.items() if not prefixes)
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in parts}
    for key, value in state.items():
        owner = next((name for name, prefixes in parts.items()
                      if prefixes and key.startswith(prefixes)), rest)
        out[owner][key] = value.detach().cpu().clone()
    return out


def _best_from_checkpoint(best: dict[str, Any], parts: dict[str, tuple[str, ...]],
                          history: dict[str, list[float]]) -> dict[str, Any]:
    """The per-part ``keep_best`` record from a resumed checkpoint's ``best``.

    Checkpoints written before per-part selection hold one epoch, its ``val_total`` and one
    state dict: every part then starts from that epoch, with its own validation loss read
    from the history.
    """
    if "parts" in best:
        return best
    fresh: dict[str, Any] = {"parts": {name: {"epoch": -1, "val": float("inf"), "state_dict": None}
                                       for name in parts}}
    if best.get("state_dict") is None or int(best.get("epoch", -1)) < 0:
        return fresh
    epoch = int(best["epoch"])
    split = _split_state(best["state_dict"], parts)
    for name in parts:
        vals = history.get(f"val_{name}", [])
        val = float(vals[epoch]) if epoch < len(vals) else float(best.get("val_total", float("inf")))
        fresh["parts"][name] = {"epoch": epoch, "val": val, "state_dict": split[name]}
    return fresh


def population_weights(populations: np.ndarray, per_draw: dict[str, float] | None = None) -> np.ndarray:
    """Per example, the probability of drawing it: every population counting the same, or
    (``per_draw``) each draw of a named population counting that many times a draw of any other.

    Parameters
    ----------
    populations : ndarray, shape ``(N,)``
        The population (union component) of each training example.
    per_draw : dict, optional
        Relative weight of one draw per population name (absent names: 1); None: balanced.

    Returns
    -------
    ndarray, shape ``(N,)``
        Balanced: ``1 / (P n_p)`` for an example of a population with ``n_p`` examples, ``P``
        populations, summing to ``1 / P`` over each population. ``per_draw``: ``w_p / sum_q w_q
        n_q``. Either way they sum to 1.

    Example
    -------
    >>> population_weights(np.array(["prior", "prior", "prior", "smooth"])).round(3).tolist()
    [0.167, 0.167, 0.167, 0.5]
    >>> population_weights(np.array(["prior", "prior", "noneq"]), {"noneq": 2.0}).tolist()
    [0.25, 0.25, 0.5]
    """
    names, index, counts = np.unique(np.asarray(populations), return_inverse=True, return_counts=True)
    if per_draw is None:
        return 1.0 / (names.size * counts[index].astype(np.float64))
    w = np.array([float(per_draw.get(str(n), 1.0)) for n in names])[index]
    return w / w.sum()


def _batches(n: int, cfg: TrainConfig, gen: torch.Generator, weights: torch.Tensor | None = None
             ) -> list[torch.Tensor]:
    size = min(cfg.batch_size, n)

    def draw(k: int) -> torch.Tensor:  # balanced populations: with replacement by the weights
        if weights is None:
            return torch.randperm(n, generator=gen)[:k]
        return torch.multinomial(weights, k, replacement=True, generator=gen)

    if cfg.batches_per_epoch:
        return [draw(size) for _ in range(cfg.batches_per_epoch)]
    order = draw(n)
    n_full = n // size
    return [order[i * size : (i + 1) * size] for i in range(n_full)]


def _observed(sampling: ObservedSampling | None, rows: torch.Tensor, cfg: TrainConfig,
              gen: torch.Generator) -> torch.Tensor | None:
    """The noisy profiles of ``rows`` through their tuning programs (None: the losses add the
    noise on the model points themselves)."""
    if sampling is None:
        return None
    return sampling.observe(rows, cfg.noise, cfg.renormalise_noisy, gen)


def _evaluate(model: PosteriorModel, atm: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
              fade: float, gen: torch.Generator, sampling: ObservedSampling | None = None
              ) -> dict[str, float]:
    sums = dict.fromkeys((*model.loss_names, "total"), 0.0)
    size = min(cfg.batch_size, atm.shape[0])
    n_batches = 0
    with torch.no_grad():
        for start in range(0, atm.shape[0] - size + 1, size):
            sl = slice(start, start + size)
            y_obs = _observed(sampling, torch.arange(start, start + size, device=atm.device), cfg, gen)
            for k, v in model.training_losses(atm[sl], y[sl], cfg, fade, gen, y_obs).items():
                sums[k] += float(v)
            n_batches += 1
    return {k: v / max(n_batches, 1) for k, v in sums.items()}


def train(
    data: xr.Dataset,
    out_dir: str | Path,
    model_config: ModelConfig | CINNConfig | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = True,
    resume: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train a posterior model on a training set: the INN (:class:`ModelConfig`) or the
    conditional INN (:class:`CINNConfig`).

    Parameters
    ----------
    data : xarray.Dataset
        Over dim ``sample``: ``I_halpha(sample, wl_halpha)``, ``I_ca8542(sample, wl_ca8542)`` in
        the profile schema (any supported units and sampling covering the model windows),
        ``log_ne``, ``log_T``, ``v`` ``(sample, height)`` (dex cm^-3, dex K, km/s), optionally
        ``status(sample)`` (0 = converged; others are skipped).
    out_dir : str or Path
        Directory of ``checkpoint.pt``, ``model.pt`` and ``loss_curves.png``.
    model_config : ModelConfig or CINNConfig, optional
        The architecture, whose type selects the model kind; default ``ModelConfig()``.
    train_config : TrainConfig, optional
        Default ``TrainConfig()``.
    progress : bool
        Show a tqdm bar over epochs.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` if it exists (it must have been written for
        the same data and configs); False starts afresh and overwrites it.
    device : str or torch.device, optional
        Default: CUDA if available, else CPU.

    Returns
    -------
    TrainResult

    Raises
    ------
    ProfileSchemaError
        Data not in the schema, or fewer than 2 usable training samples.
    CheckpointError
        ``resume`` and an existing checkpoint written for other data or configs.
    """
    mc = model_config or ModelConfig()
    tc = train_config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    src = source_name(data, default="<training set>")
    if "sample" not in data.dims:
        raise ProfileSchemaError(f"{src}: a training set needs a 'sample' dim")

    # -- data --------------------------------------------------------------------------------
    labels = sample_labels(data)
    held_out = evaluation_split(labels, tc.test_fraction)
    keep = usable_samples(data)
    keep = keep[~held_out[keep]]
    sub = data.isel(sample=keep)
    y_all, _ = normalise_profiles(sub, unit=mc.intensity_unit, fwhm_A=tc.fwhm_A(), source=src)
    atm_all = atmosphere_to_array(sub, source=src)
    finite = np.isfinite(y_all).all(axis=1)
    keep, y_all, atm_all = keep[finite], y_all[finite], atm_all[finite]
    sub = data.isel(sample=keep)
    n = keep.size
    n_val = int(round(tc.val_fraction * n))
    if n - n_val < 2:
        raise ProfileSchemaError(f"{src}: {n} usable samples (status 0, finite, positive peak, not "
                                 "held out); training needs at least 2 outside the validation split")
    heights = np.asarray(sub["height"].values, dtype=float)
    data_sha = arrays_sha256(
        heights,
        *(np.asarray(sub[ln.dim].values, dtype=float) for ln in LINES),
        *(np.asarray(sub[ln.var].transpose("sample", ln.dim).values, dtype=np.float32) for ln in LINES),
        *(np.asarray(sub[v].transpose("sample", "height").values, dtype=np.float32)
          for v in ("log_ne", "log_T", "v")),
    )
    perm = np.random.default_rng(tc.seed).permutation(n)
    val_pos, train_pos = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    val_samples = [int(i) for i in labels[keep[val_pos]]]
    train_samples = [int(i) for i in labels[keep[train_pos]]]
    draw_weights = None
    if tc.population_weight and "population" not in sub.coords:
        raise ConfigError(f"train: population_weight {tc.population_weight} for {src}, which is one "
                          "store; expected a union of generators (radynversion.datasets.training_union)")
    if (tc.balance_populations or tc.population_weight) and "population" in sub.coords:
        pops = np.asarray(sub["population"].values)[train_pos]
        per_draw = dict(tc.population_weight) if tc.population_weight else None
        unknown = sorted(set(per_draw or ()) - {str(p) for p in np.unique(pops)})
        if unknown:
            raise ConfigError(f"train: population_weight names {unknown}, not populations of {src}; "
                              f"expected some of {sorted(str(p) for p in np.unique(pops))}")
        w = population_weights(pops, per_draw)
        draw_weights = torch.as_tensor(w)
        balance = {str(p): {"train_examples": int((pops == p).sum()), "share": float(w[pops == p].sum())}
                   for p in np.unique(pops)}
    provenance: dict[str, Any] = {
        **({("weighted_populations" if tc.population_weight else "balanced_populations"): balance}
           if draw_weights is not None else {}),
        "n_input": int(data.sizes["sample"]),
        "n_held_out": int(held_out.sum()),
        "n_usable": int(n),
        "n_train": int(train_pos.size),
        "n_val": int(val_pos.size),
        "test_fraction": float(tc.test_fraction),
        "val_samples": val_samples,
        "train_samples": train_samples,
        "val_samples_sha256": arrays_sha256(np.asarray(val_samples, dtype=np.int64)),
        "source": source_label(data),
    }

    # -- model, optimiser --------------------------------------------------------------------
    model_cls = next((cls for cls, cfg_cls in MODEL_KINDS.values() if isinstance(mc, cfg_cls)), None)
    if model_cls is None:
        raise ConfigError(f"train: model_config is a {type(mc).__name__}; expected a ModelConfig "
                          "(INN) or a CINNConfig (conditional INN)")
    model = model_cls(mc, height_Mm=heights, fwhm_A=tc.fwhm_A())
    model.set_standardisation(atm_all[train_pos], y_all[train_pos])
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=tc.lr, betas=tc.betas, eps=tc.eps, weight_decay=tc.weight_decay)
    n_decays = max(1, (tc.epochs - 1) // tc.lr_decay_every)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tc.lr_decay_every,
                                            gamma=tc.lr_final_fraction ** (1.0 / n_decays))
    history: dict[str, list[float]] = {}
    start = 0
    parts = best_epoch_parts(model)
    best: dict[str, Any] = _best_from_checkpoint({}, parts, {})
    ckpt_path, model_path = out / CHECKPOINT_NAME, out / MODEL_NAME
    mc_toml, tc_toml = to_toml(mc), to_toml(tc)
    if resume and ckpt_path.exists():
        ckpt = read_checkpoint(ckpt_path, map_location=dev)
        def parsed(cls: type, text: str | None) -> Any:  # compare values, not TOML text
            try:
                return from_toml(cls, text or "")
            except ConfigError:
                return None

        for what, have, want in (("training set", ckpt.get("training_set_sha256"), data_sha),
                                 ("model config", parsed(type(mc), ckpt.get("model_config")), mc),
                                 ("train config", parsed(TrainConfig, ckpt.get("train_config")), tc)):
            if have != want:
                raise CheckpointError(f"{ckpt_path}: was written for another {what}; pass "
                                      "resume=False to start afresh or use another out_dir")
        if "training" not in ckpt:
            raise CheckpointError(f"{ckpt_path}: has no training state to resume from")
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["training"]["optimizer"])
        sched.load_state_dict(ckpt["training"]["scheduler"])
        history = {k: list(v) for k, v in ckpt["training"]["history"].items()}
        start = int(ckpt["training"]["epoch"]) + 1
        best = _best_from_checkpoint(ckpt["training"].get("best", {}), parts, history)

    atm_t = torch.as_tensor(atm_all, device=dev)
    y_t = torch.as_tensor(y_all, device=dev)
    tr = torch.as_tensor(train_pos, device=dev)
    atm_tr, y_tr = atm_t[tr], y_t[tr]
    atm_val, y_val = atm_t[torch.as_tensor(val_pos, device=dev)], y_t[torch.as_tensor(val_pos, device=dev)]
    sampling_tr = sampling_val = None
    if tc.tuning_programs:  # the same programs (same seed) for both splits
        def observed(pos: np.ndarray) -> ObservedSampling:
            return ObservedSampling(sub.isel(sample=pos), y_all[pos], tc.tuning_programs, tc.fwhm_A(),
                                    mc.intensity_unit, seed=tc.seed, source=src, device=dev)

        sampling_tr = observed(train_pos)
        sampling_val = observed(val_pos) if val_pos.size else None
        provenance["tuning_programs"] = [
            prog if isinstance(prog, str) else {k: [round(float(w), 3) for w in wl] for k, wl in prog.items()}
            for prog in sampling_tr.programs]
    meta = {"train_config": tc, "training_set_sha256": data_sha, "provenance": provenance}

    cuda_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    bar = tqdm(range(start, tc.epochs), initial=start, total=tc.epochs, disable=not progress,
               desc="train", unit="epoch")
    for epoch in bar:
        t0 = time.perf_counter()
        fade = tc.fade(epoch)
        seed = _stream_seed(tc.seed, epoch)
        cpu_gen = torch.Generator().manual_seed(seed)
        gen = torch.Generator(device=dev).manual_seed(seed)
        model.train()
        sums = dict.fromkeys((*model.loss_names, "total"), 0.0)
        batches = _batches(train_pos.size, tc, cpu_gen, draw_weights)
        # dropout draws from torch's global RNG: seed it per epoch (so that a run, resumed or
        # not, is reproducible) and give the caller's state back afterwards
        with torch.random.fork_rng(devices=cuda_devices):
            # only the generators fork_rng restores: torch.manual_seed would reseed every GPU
            torch.random.default_generator.manual_seed(_stream_seed(seed, _GLOBAL_STREAM))
            if cuda_devices:
                with torch.cuda.device(cuda_devices[0]):
                    torch.cuda.manual_seed(_stream_seed(seed, _GLOBAL_STREAM))
            for idx in batches:
                idx = idx.to(dev)
                losses = model.training_losses(atm_tr[idx], y_tr[idx], tc, fade, gen,
                                               _observed(sampling_tr, idx, tc, gen))
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(losses["total"]):
                    continue  # a non-finite batch is skipped, and shows in the history as such
                losses["total"].backward()
                for p in params:
                    if p.grad is not None:
                        p.grad.clamp_(-tc.grad_clamp, tc.grad_clamp)
                opt.step()
                for k, v in losses.items():
                    sums[k] += float(v.detach())
        lr = opt.param_groups[0]["lr"]
        sched.step()
        model.eval()
        val = (_evaluate(model, atm_val, y_val, tc, fade,
                         torch.Generator(device=dev).manual_seed(_stream_seed(tc.seed, _VAL_STREAM)),
                         sampling_val)
               if n_val else {})
        record = {"epoch": float(epoch), "lr": float(lr), "fade": fade,
                  "seconds": time.perf_counter() - t0}
        record.update({f"train_{k}": v / max(len(batches), 1) for k, v in sums.items()})
        record.update({f"val_{k}": float(v) for k, v in val.items()})
        for k, v in record.items():
            history.setdefault(k, []).append(float(v))
        if tc.keep_best and val:
            improved = [name for name in parts
                        if np.isfinite(val[name]) and val[name] < best["parts"][name]["val"]]
            if improved:
                split = _split_state(model.state_dict(), {k: parts[k] for k in parts})
                for name in improved:
                    best["parts"][name] = {"epoch": epoch, "val": float(val[name]),
                                           "state_dict": split[name]}
        bar.set_postfix(loss=f"{record['train_total']:.3g}", fwd=f"{record['train_forward_l2']:.3g}")
        if (epoch + 1) % tc.checkpoint_every == 0 or epoch == tc.epochs - 1:
            training = {"epoch": epoch, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "history": history, "best": best}
            save_checkpoint(ckpt_path, model, training=training, **meta)
            plot_history(history, out / PLOT_NAME)
    bar.close()

    if tc.keep_best and all(rec["state_dict"] is not None for rec in best["parts"].values()):
        merged: dict[str, torch.Tensor] = {}
        for rec in best["parts"].values():
            merged.update(rec["state_dict"])
        model.load_state_dict(merged)
        rest = next(name for name, prefixes in parts.items() if not prefixes)
        provenance["best_epoch"] = int(best["parts"][rest]["epoch"])
        provenance["best_epochs"] = {name: int(rec["epoch"]) for name, rec in best["parts"].items()}
        provenance["best_val"] = {name: float(rec["val"]) for name, rec in best["parts"].items()}
        if set(parts) == {"total"}:
            provenance["best_val_total"] = float(best["parts"]["total"]["val"])
    model.eval()
    # what the model knows of its training distribution: per-pixel trust at inference
    try:
        model.trust = build_trust_reference(
            model, sub.isel(sample=train_pos), sub.isel(sample=val_pos if val_pos.size else train_pos),
            source=f"training set {data_sha[:12]}")
        provenance["trust_reference"] = model.trust.description
    except Exception as err:  # noqa: BLE001 - optional: a failed fit must not lose the trained model
        model.trust = None
        provenance["trust_reference"] = f"not fitted: {type(err).__name__}: {err}"
    model.metadata = {"train_config": tc_toml, "model_config": mc_toml, "training_set_sha256": data_sha,
                      "provenance": provenance, "path": str(model_path)}
    save_checkpoint(model_path, model, **meta)
    if not (out / PLOT_NAME).exists() and history:
        plot_history(history, out / PLOT_NAME)
    return TrainResult(model=model, history=history, checkpoint=ckpt_path, model_path=model_path)
