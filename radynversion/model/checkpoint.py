"""Model checkpoints: one ``torch.save`` file of tensors and plain-Python metadata.

A checkpoint is a dict (loaded with ``torch.load(..., weights_only=True)``, so a file can
hold no code)::

    format            "radynversion-checkpoint"
    format_version    1
    package_version   radynversion.__version__ of the writer
    model_kind        "inn" (RadynversionINN) or "cinn" (ConditionalINN); absent = "inn"
    model_config      ModelConfig or CINNConfig as TOML
    train_config      TrainConfig as TOML ("" if unknown)
    height_Mm         list of H node heights [Mm]
    wavelengths_A     {line key: list of model-window wavelengths [air Angstrom]}
    wavelength_medium "air"
    intensity_unit    unit of the joint normalisation
    normalisation     "joint_peak", "per_line_peak" or "per_line_wing" (the model's
                      ``config.normalisation``)
    instrument        {"profile": "gaussian", "fwhm_A": {line key: FWHM [Angstrom]}}
    training_set_sha256  sha256 over the training arrays ("" if unknown)
    provenance        other plain-Python facts (validation indices hash, sample counts...)
    state_dict        the module's tensors (weights, permutations, standardisation)
    training          optional: optimiser/scheduler state, epoch, history (for resuming)
    weights_dtype     optional: "float16" for a shipped copy (:func:`compact_checkpoint`)

:func:`load_model` refuses (:class:`radynversion.errors.CheckpointError`, one line naming the
file and the mismatch) a missing, corrupt or foreign file, another format version, and a
height grid or model windows that differ from the expected ones.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..atmosphere import default_height_grid
from ..config import from_toml, to_toml
from ..errors import CheckpointError, ConfigError
from .base import PosteriorModel
from .cinn import ConditionalINN
from .config import CINNConfig, ModelConfig, TrainConfig
from .inn import RadynversionINN
from .preprocess import model_wavelengths
from .trust import TrustReference

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DEFAULT_MODEL_PATH",
    "compact_checkpoint",
    "DEFAULT_PER_LINE_MODEL_PATH",
    "default_model_for",
    "default_model_reason",
    "arrays_sha256",
    "file_sha256",
    "checkpoint_bytes",
    "checkpoint_metadata",
    "save_checkpoint",
    "read_checkpoint",
    "model_from_checkpoint",
    "load_model",
    "zero_tiny_weights_",
]

FORMAT = "radynversion-checkpoint"
FORMAT_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "data" / "default_model.pt"
#: the shipped variant for the inputs the default model does not take: uncalibrated data (DN:
#: profiles normalised per line) and partial coverage (one line, short windows, gaps)
DEFAULT_PER_LINE_MODEL_PATH = DEFAULT_MODEL_PATH.with_name("default_model_per_line.pt")
#: model kind -> (class, config class)
MODEL_KINDS: dict[str, tuple[type[PosteriorModel], type]] = {
    "inn": (RadynversionINN, ModelConfig),
    "cinn": (ConditionalINN, CINNConfig),
}
#: the checkpoint's ``normalisation`` field for each ``CINNConfig.normalisation``
NORMALISATION_LABELS = {"joint": "joint_peak", "per_line": "per_line_peak", "per_line_wing": "per_line_wing"}
#: parameters below this magnitude are set to zero at load (:func:`zero_tiny_weights_`)
TINY_WEIGHT = 1e-30
#: tolerance [Mm, Angstrom] when comparing grids
_GRID_ATOL = 1e-5


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of the bytes of the file ``path`` (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def arrays_sha256(*arrays: np.ndarray) -> str:
    """sha256 hex digest over the shapes, dtypes and C-ordered bytes of ``arrays``."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: PosteriorModel,
    train_config: TrainConfig | None = None,
    training_set_sha256: str = "",
    provenance: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` (atomically: temp file, then rename).

    Parameters
    ----------
    path : str or Path
        Output file (conventionally ``*.pt``).
    model : PosteriorModel
        The network (either kind); its config, heights, instrument FWHM and standardisation
        are saved.
    train_config : TrainConfig, optional
        How it was trained.
    training_set_sha256 : str
        :func:`arrays_sha256` of the training arrays.
    provenance : dict, optional
        Further plain-Python facts to record.
    training : dict, optional
        Tensors and plain Python needed to resume training.

    Returns
    -------
    Path
    """
    path = Path(path)
    ckpt = _checkpoint_dict(model, train_config, training_set_sha256, provenance)
    if training is not None:
        ckpt["training"] = training
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


#: tensors kept at full precision by :func:`compact_checkpoint` (standardisation, grids)
_FULL_PRECISION = ("x_mean", "x_std", "y_mean", "y_std", "height_Mm", "fwhm_A")


def default_model_for(model: Any, profiles: Any) -> Any:
    """The model to invert ``profiles`` with: ``model`` itself unless it is None (the default).

    Then :data:`DEFAULT_MODEL_PATH`, unless the input needs what only the shipped variant
    :data:`DEFAULT_PER_LINE_MODEL_PATH` takes (normalised per line, trained on partial
    coverage): a line in DN or dimensionless (uncalibrated: the lines' relative gains are
    unknown), one line alone, or model points the tunings do not observe (a window short by more
    than half a tuning step, a gap; :func:`radynversion.model.preprocess.observed_program`).
    :func:`default_model_reason` says which.
    """
    if model is not None:
        return model
    return DEFAULT_PER_LINE_MODEL_PATH if default_model_reason(profiles) and DEFAULT_PER_LINE_MODEL_PATH.is_file() \
        else DEFAULT_MODEL_PATH


def default_model_reason(profiles: Any) -> str:
    """Why ``profiles`` need the shipped per-line variant (``""``: they do not)."""
    import astropy.units as u

    from ..errors import RadynversionError
    from ..lines import LINES
    from ..schema import intensity_unit
    from .preprocess import observed_program

    try:
        present = [ln for ln in LINES if ln.var in profiles.data_vars]
        dn = [ln.var for ln in present if intensity_unit(profiles, ln) in (u.DN, u.dimensionless_unscaled)]
        if dn:
            return f"uncalibrated input ({', '.join(dn)} in DN)"
        if len(present) < len(LINES):
            return f"one line alone ({present[0].var})" if present else ""
        seen = observed_program(profiles, partial=True)
    except (RadynversionError, AttributeError, KeyError, ValueError):
        return ""  # refused later, with its own message
    if not seen.all():
        return f"partial coverage ({int((~seen).sum())} of {seen.size} model points unobserved)"
    return ""


def compact_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """A copy of checkpoint ``src`` for shipping: its float32 weights stored in half precision
    (float16: 10-bit mantissa, 4x finer than bfloat16; the standardisation and grids stay
    float32/64), its training state dropped. :func:`load_model` casts the weights back to
    float32, so inference runs as before; the file is half the size. The checkpoint records
    ``weights_dtype = "float16"``.

    Returns
    -------
    Path
        ``dst``.
    """
    ckpt = read_checkpoint(src)
    ckpt.pop("training", None)
    state = {}
    for k, v in ckpt["state_dict"].items():
        keep = k in _FULL_PRECISION or v.dtype != torch.float32
        if not keep and float(v.abs().max()) > float(torch.finfo(torch.float16).max):
            raise CheckpointError(f"{src}: {k} holds |values| up to {float(v.abs().max()):.3g}; expected at "
                                  "most 65504 for float16 storage")
        state[k] = v if keep else v.to(torch.float16)
    # metadata that older files may record wrongly is derived again from the config
    model = model_from_checkpoint(read_checkpoint(src), src)
    ckpt["normalisation"] = _checkpoint_dict(model)["normalisation"]
    ckpt["state_dict"] = state
    ckpt["weights_dtype"] = "float16"
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, dst)
    return dst


def _checkpoint_dict(model: PosteriorModel, train_config: TrainConfig | None = None, training_set_sha256: str = "",
                     provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """What :func:`save_checkpoint` writes (without ``training``)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model_kind": model.kind,
        "model_config": to_toml(model.config),
        "train_config": to_toml(train_config) if train_config is not None else "",
        "height_Mm": [float(h) for h in model.height_Mm.cpu().tolist()],
        "wavelengths_A": {k: [float(w) for w in v] for k, v in model_wavelengths().items()},
        "wavelength_medium": "air",
        "intensity_unit": model.config.intensity_unit,
        "normalisation": NORMALISATION_LABELS[getattr(model.config, "normalisation", "joint")],
        "instrument": {"profile": "gaussian", "fwhm_A": model.instrument_fwhm_A()},
        "training_set_sha256": training_set_sha256,
        "provenance": dict(provenance or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **({"trust": model.trust.to_dict()} if getattr(model, "trust", None) is not None else {}),
    }


def checkpoint_bytes(model: PosteriorModel) -> bytes:
    """The bytes of ``model``'s checkpoint, as :func:`save_checkpoint` writes it with the
    training-set hash and provenance of its metadata: what identifies (by sha256) and carries
    a model that exists only in memory. The same model gives the same bytes."""
    meta = dict(model.metadata)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "model.pt", model,
                               training_set_sha256=str(meta.get("training_set_sha256", "")),
                               provenance=dict(meta.get("provenance", {}) or {}))
        return path.read_bytes()


def checkpoint_metadata(model: PosteriorModel) -> dict[str, Any]:
    """The metadata of :func:`checkpoint_bytes` (everything but the weights): what
    :func:`load_model` of those bytes gives as ``net.metadata``, without the path."""
    meta = dict(model.metadata)
    ckpt = _checkpoint_dict(model, training_set_sha256=str(meta.get("training_set_sha256", "")),
                            provenance=dict(meta.get("provenance", {}) or {}))
    ckpt.pop("state_dict")
    return ckpt


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format.

    Raises
    ------
    CheckpointError
        Missing, unreadable, unsafe or foreign file, or another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; expected a model file written by "
                              "radynversion (radynversion train)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt/unsafe files
        msg = " ".join(str(err).split()).split(". ")[0][:160]
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {msg}); expected "
                              "a complete file written by radynversion (radynversion train)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a radynversion checkpoint (no format = {FORMAT!r}); expected "
                              "a file written by radynversion (radynversion train)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('format_version')!r} "
                              f"(written by radynversion {ckpt.get('package_version', '?')}); expected "
                              f"version {FORMAT_VERSION}, the one this radynversion reads")
    missing = [k for k in ("model_config", "height_Mm", "wavelengths_A", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; expected a complete radynversion "
                              "checkpoint")
    return ckpt


def _check_grid(path: Path, what: str, have: Any, want: np.ndarray) -> None:
    have_a = np.asarray(have, dtype=float)
    if have_a.shape != want.shape or not np.allclose(have_a, want, rtol=0, atol=_GRID_ATOL):
        if have_a.shape != want.shape:
            detail = f"{have_a.size} points, expected {want.size}"
        else:
            i = int(np.argmax(np.abs(have_a - want)))
            detail = f"point {i} is {have_a[i]:.6g}, expected {want[i]:.6g}"
        raise CheckpointError(f"{path}: {what} differs from the expected grid ({detail}); expected a "
                              "model trained on this radynversion's grid")


def model_from_checkpoint(
    ckpt: dict[str, Any],
    path: str | Path = "<checkpoint>",
    height_Mm: np.ndarray | None = None,
) -> PosteriorModel:
    """Build the model (:class:`RadynversionINN` or :class:`ConditionalINN`, by ``model_kind``)
    of a checkpoint dict (see :func:`read_checkpoint`), checking its height grid against
    ``height_Mm`` (default :func:`radynversion.atmosphere.default_height_grid`) and its model
    windows against :mod:`radynversion.lines`."""
    path = Path(path)
    want_h = default_height_grid() if height_Mm is None else np.asarray(height_Mm, dtype=float)
    _check_grid(path, "height grid (height_Mm)", ckpt["height_Mm"], want_h)
    wls = ckpt["wavelengths_A"]
    for key, want in model_wavelengths().items():
        if not isinstance(wls, dict) or key not in wls:
            raise CheckpointError(f"{path}: checkpoint has no model window for line {key!r}; expected "
                              f"wavelengths_A for {list(model_wavelengths())}")
        _check_grid(path, f"model window wavelengths_A[{key!r}]", wls[key], want)
    kind = ckpt.get("model_kind", "inn")
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"{path}: model_kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    cls, config_cls = MODEL_KINDS[kind]
    try:
        config = from_toml(config_cls, ckpt["model_config"], where=f"{path}: model_config")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    fwhm = ckpt.get("instrument", {}).get("fwhm_A", {})
    try:
        model = cls(config, height_Mm=want_h, fwhm_A=fwhm)
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (ConfigError, RuntimeError, KeyError, TypeError) as err:
        text = " ".join(str(err).split())
        text = text.removeprefix(f"Error(s) in loading state_dict for {cls.__name__}:").strip()[:240]
        raise CheckpointError(f"{path}: state_dict does not fit its model_config ({text}); expected the "
                              "weights the checkpoint's config builds") from None
    model.metadata = {k: v for k, v in ckpt.items() if k not in ("state_dict", "training", "trust")}
    model.metadata["path"] = str(path)
    if ckpt.get("trust") is not None:
        model.trust = TrustReference.from_dict(ckpt["trust"], str(path))
    return model


def load_model(
    path: str | Path | None = None,
    map_location: str | torch.device = "cpu",
    height_Mm: np.ndarray | None = None,
) -> PosteriorModel:
    """Load a trained model (either kind) for inversion (in eval mode).

    Parameters below :data:`TINY_WEIGHT` in magnitude are set to zero
    (:func:`zero_tiny_weights_`): the same network to float32 precision, without the slow
    subnormal arithmetic they cause on x86 CPUs.

    Parameters
    ----------
    path : str or Path, optional
        Checkpoint file; default ``radynversion/data/default_model.pt``.
    map_location : str or torch.device
        Device of the returned model.
    height_Mm : ndarray, shape ``(H,)``, optional
        Expected node heights [Mm]; default the package's grid.

    Raises
    ------
    CheckpointError
        Missing, corrupt, foreign or incompatible checkpoint.

    Example
    -------
    >>> from radynversion.model import load_model
    >>> model = load_model("runs/demo/model.pt")  # doctest: +SKIP
    """
    if path is None:
        path = DEFAULT_MODEL_PATH
        if not path.is_file():
            raise CheckpointError(
                f"{path}: no default model is installed; train one (radynversion.model.train) and "
                "pass its model.pt, or install a release that ships default_model.pt")
    ckpt = read_checkpoint(path, map_location=map_location)
    model = model_from_checkpoint(ckpt, path, height_Mm=height_Mm)
    zero_tiny_weights_(model)
    return model.to(map_location).eval()


def zero_tiny_weights_(model: torch.nn.Module, below: float = TINY_WEIGHT) -> int:
    """Set the floating-point parameters of ``model`` whose magnitude is below ``below`` (but
    not zero) to zero, in place.

    Weight decay shrinks the weights of dead units geometrically, and after a few hundred
    epochs some are below 1e-30 or subnormal (below 1.2e-38 in float32): the packaged model's
    emulator has 1,721 weights under 1e-30, 539 of them subnormal (its flow has 5). Their
    products with activations are subnormal, which x86 CPUs compute in slow microcode: the emulator's
    second 512 x 512 layer ran 3-10x slower than its twin, and the round trip took 6 % of a
    chunk's time for 1.6 % of its FLOPs. A weight below 1e-30 changes no sum by as much as one
    float32 rounding unless every other term of it is below 1e-23, so zero is the same network
    to float32 precision.

    Parameters
    ----------
    model : torch.nn.Module
    below : float
        Threshold [the parameters' own units].

    Returns
    -------
    int
        How many values were set to zero.
    """
    zeroed = 0
    with torch.no_grad():
        for t in model.parameters():
            if not t.is_floating_point():
                continue
            tiny = (t != 0) & (t.abs() < below)
            n = int(tiny.sum())
            if n:
                t.masked_fill_(tiny, 0.0)
                zeroed += n
    return zeroed
