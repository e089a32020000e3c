"""Inference kernels: fully connected stacks with bias and leaky ReLU fused, on CPU.

An eager ``nn.Linear`` with a bias on CPU is ``addmm``: the bias is first copied into every
row of the output, then the matrix product is added to it, and the leaky ReLU that follows
is one more pass over the result. For the couplings' ``(2048 x 256) @ (256 x 256)`` layers
that is 10-15 % of a posterior pass spent moving memory. oneDNN's linear primitive (part of
torch's CPU builds for x86 and most ARM64 ones, reached through
``torch.ops.mkldnn._linear_pointwise``, the op ``torch.compile`` itself emits) adds the bias
and applies the activation inside the matrix product's own loop. Same values: the products are the same, and the bias and activation are
the same float32 operations.

It is used only where it cannot change what autograd or autocast see: CPU tensors, no
gradient recording, modules in eval mode, and either no autocast (float32 throughout) or a
bfloat16 autocast, whose arithmetic it keeps (bfloat16 inputs and weights, the weights cast
once and cached, float32 accumulation, bfloat16 results; float32 where the module says so,
as the couplings' output layers do). Everywhere else, and where the op is missing or fails
its check at first use, the layers run as plain modules. Set the environment
variable ``RADYNVERSION_FUSED=0`` to switch the fused path off (benchmarks compare the two).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fused_available", "fused_applies", "mlp", "unfused"]

_STATE = threading.local()


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype of ``device_type`` in this thread, None when autocast is off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # pragma: no cover - torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


#: bfloat16 copies of a linear layer's weight and bias for the fused path under a bfloat16
#: autocast, keyed by the layer (modules hash by identity; the entry goes with the layer),
#: with the tensors' version counters and data pointers: an in-place update (training) or a
#: move makes a new copy
_BF16: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, ...], Tensor, Tensor | None]] = (
    weakref.WeakKeyDictionary())
_BF16_LOCK = threading.Lock()


def _bf16_params(m: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """``m``'s weight and bias in bfloat16, cast once per version of the parameters."""
    key = tuple(v for t in (m.weight, m.bias) if t is not None for v in (t._version, t.data_ptr()))
    with _BF16_LOCK:
        hit = _BF16.get(m)
        if hit is None or hit[0] != key:
            bias = None if m.bias is None else m.bias.detach().to(torch.bfloat16)
            hit = (key, m.weight.detach().to(torch.bfloat16).contiguous(), bias)
            _BF16[m] = hit
    return hit[1], hit[2]


@functools.cache
def fused_available() -> bool:
    """Whether the fused oneDNN linear runs here and agrees with ``F.linear`` + leaky ReLU
    (checked once per process on a small product), and ``RADYNVERSION_FUSED`` is not ``0``."""
    if os.environ.get("RADYNVERSION_FUSED", "1").strip() in ("0", "false", "no", "off"):
        return False
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    try:  # in float32 whatever the caller's autocast
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(96, 40, generator=gen)
            w = torch.randn(24, 40, generator=gen)
            b = torch.randn(24, generator=gen)
            want = F.linear(x, w, b)
            fused = op(x, w, b, "leaky_relu", [0.01], "")
            plain = op(x, w, b, "none", [], "")
            return bool(torch.allclose(fused, F.leaky_relu(want, 0.01), rtol=1e-5, atol=1e-5)
                        and torch.allclose(plain, want, rtol=1e-5, atol=1e-5))
    except Exception:  # noqa: BLE001 - any failure of the op means: run the plain modules
        return False


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """Run the layers as plain modules inside the block, in this thread (e.g. to count FLOPs
    with ``torch.utils.flop_counter.FlopCounterMode``, which does not know the fused op)."""
    before = getattr(_STATE, "off", False)
    _STATE.off = True
    try:
        yield
    finally:
        _STATE.off = before


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - torch < 2.3
        return False


def fused_applies(h: Tensor) -> bool:
    """Whether :func:`mlp` fuses its layers for the input ``h``: a CPU tensor, float32 without
    autocast or float32 / bfloat16 under a CPU bfloat16 autocast, no gradient recording, not
    being traced by ``torch.compile``, outside :func:`unfused`, and the fused op available
    (:func:`fused_available`)."""
    if _compiling():  # torch.compile fuses (and freezes) the plain graph itself
        return False
    cast = _autocast_dtype("cpu")
    dtypes = (torch.float32,) if cast is None else (torch.float32, torch.bfloat16)
    return (h.device.type == "cpu" and h.dtype in dtypes and cast in (None, torch.bfloat16)
            and not torch.is_grad_enabled() and h.shape[0] > 0
            and not getattr(_STATE, "off", False) and fused_available())


def mlp(layers: Sequence[nn.Module], h: Tensor) -> Tensor:
    """Run ``layers`` (an ``nn.Sequential`` or a slice of one) on ``h``.

    Each ``nn.Linear`` followed by an ``nn.LeakyReLU`` is one fused oneDNN call, a lone
    ``nn.Linear`` another (its result cast to float32 if the module has
    ``float32_output = True``); a leading ``nn.LeakyReLU`` is applied in place (``h`` must then be
    a tensor the caller owns); ``nn.Dropout`` in eval mode is skipped. Where the fused path
    does not apply (:func:`fused_applies`), or any module is not one of these (subclasses
    included) or is in training mode, the modules are called as they are.

    Parameters
    ----------
    layers : sequence of nn.Module
    h : Tensor, shape ``(N, in_features)``

    Returns
    -------
    Tensor, shape ``(N, out_features)``
    """
    mods = list(layers)
    # subclasses may change forward(): only the plain modules, and linears that declare their
    # one change (float32_output), are fused
    known = all(type(m) in (nn.Linear, nn.LeakyReLU, nn.Dropout)
                or (isinstance(m, nn.Linear) and getattr(m, "float32_output", False)) for m in mods)
    plain = (not known or not fused_applies(h) or any(m.training for m in mods)
             or any(m.weight.dtype != torch.float32 for m in mods if isinstance(m, nn.Linear)))
    if plain:
        for m in mods:
            h = m(h)
        return h
    op = torch.ops.mkldnn._linear_pointwise
    bf16 = _autocast_dtype("cpu") == torch.bfloat16
    h = h.to(torch.bfloat16 if bf16 else torch.float32)
    mods = [m for m in mods if not isinstance(m, nn.Dropout)]
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.LeakyReLU):
            h = F.leaky_relu_(h, m.negative_slope)
            i += 1
            continue
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        w, b = _bf16_params(m) if bf16 else (m.weight, m.bias)
        h = h.contiguous()
        if isinstance(nxt, nn.LeakyReLU):
            h = op(h, w, b, "leaky_relu", [nxt.negative_slope], "")
            i += 2
        else:
            h = op(h, w, b, "none", [], "")
            if getattr(m, "float32_output", False):
                h = h.float()
            i += 1
    return h
