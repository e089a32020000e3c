"""Tests of the inference kernels (radynversion.model.kernels) and of the weights' clean-up at
load (radynversion.model.checkpoint.zero_tiny_weights_): same values as the plain modules,
and the plain path wherever autograd, autocast or training mode could see a difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from radynversion.model import (
    CINNConfig,
    ConditionalINN,
    kernels,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from radynversion.model.checkpoint import TINY_WEIGHT, zero_tiny_weights_


def _stack(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(40, 64), nn.LeakyReLU(0.01), nn.Dropout(0.2), nn.Linear(64, 64),
                         nn.LeakyReLU(0.05), nn.Dropout(0.2), nn.Linear(64, 7)).eval()


def test_mlp_gives_the_values_of_the_modules():
    seq = _stack()
    x = torch.randn(300, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = seq(x)
        assert kernels.fused_applies(x) == kernels.fused_available()
        got = kernels.mlp(seq, x)
        # a slice starting with the activation (as after the couplings' first layer)
        h = seq[0](x)
        got_tail = kernels.mlp(seq[1:], h.clone())
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_tail, want, atol=1e-6, rtol=1e-6)


def test_the_check_of_the_op_ignores_the_callers_autocast():
    kernels.fused_available.cache_clear()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            first = kernels.fused_available()
        kernels.fused_available.cache_clear()
        assert first == kernels.fused_available()
    finally:
        kernels.fused_available.cache_clear()


def test_the_fused_path_is_on_for_this_torch_on_x86():
    """CI and this project's machines are x86 with torch's oneDNN: the fast path must not be
    lost silently (e.g. by a torch that renames the op)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("oneDNN's linear is checked on x86 only")
    assert kernels.fused_available()


def test_mlp_runs_the_plain_modules_where_the_fusion_could_be_seen(monkeypatch):
    seq = _stack()
    x = torch.randn(50, 40, generator=torch.Generator().manual_seed(2))
    # gradients: the result is differentiable, as the modules' is
    out = kernels.mlp(seq, x.requires_grad_())
    assert out.grad_fn is not None and not kernels.fused_applies(x)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.no_grad():
        # training mode: dropout acts, exactly as the modules' call with the same random stream
        seq.train()
        torch.manual_seed(3)
        a = kernels.mlp(seq, x)
        torch.manual_seed(3)
        b = seq(x)
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        seq.eval()
        # bfloat16 autocast: fused in bfloat16, as close to float32 as the modules' result
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert kernels.fused_applies(x) == kernels.fused_available()
            got, want = kernels.mlp(seq, x), seq(x)
        assert got.dtype == want.dtype == torch.bfloat16
        exact = seq(x)
        err_got, err_want = (got.float() - exact).abs().max(), (want.float() - exact).abs().max()
        assert err_got <= 1.5 * err_want + 1e-3 and err_got < 0.02 * exact.abs().max()
        # an in-place update of the weights (training) reaches the cached bfloat16 copies
        seq[0].weight.mul_(0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            again, want_again = kernels.mlp(seq, x), seq(x)
        seq[0].weight.mul_(2.0)
        assert (again.float() - got.float()).abs().max() > 0.01
        assert (again.float() - want_again.float()).abs().max() <= 1.5 * (want.float() - exact).abs().max() + 0.02
        # float16 autocast, float64 tensors: the modules
        with torch.autocast("cpu", dtype=torch.float16):
            assert not kernels.fused_applies(x)
        assert not kernels.fused_applies(x.double())
        with kernels.unfused():
            assert not kernels.fused_applies(x)
        assert kernels.fused_applies(x) == kernels.fused_available()
    # a Linear subclass with its own forward: the modules, not the fused op
    class Doubled(nn.Linear):
        def forward(self, x):  # noqa: ANN001, ANN202
            return 2 * super().forward(x)

    odd = nn.Sequential(Doubled(40, 8)).eval()
    with torch.inference_mode():
        torch.testing.assert_close(kernels.mlp(odd, x), odd(x), atol=0, rtol=0)
    # the environment switch (read once per process: clear the cache around it)
    monkeypatch.setenv("RADYNVERSION_FUSED", "0")
    kernels.fused_available.cache_clear()
    try:
        assert not kernels.fused_available()
        with torch.inference_mode():
            torch.testing.assert_close(kernels.mlp(seq, x), seq(x), atol=0, rtol=0)
    finally:
        monkeypatch.delenv("RADYNVERSION_FUSED")
        kernels.fused_available.cache_clear()


@pytest.mark.parametrize("clamp", ["ATAN", "SIGMOID"])
def test_sample_pixels_fused_equals_unfused(clamp):
    cfg = CINNConfig(n_blocks=3, subnet_hidden=32, subnet_layers=2, cond_features=8, cond_hidden=32,
                     cond_layers=1, emulator_hidden=32, emulator_layers=2, emulator_dropout=0.2,
                     output_init_scale=0.3, clamp_activation=clamp)
    net = ConditionalINN(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        ctx = net.condition(torch.rand(3, 60, generator=gen))
        z = torch.randn(3, 5, net.n_z, generator=gen)
        atm = net.sample_pixels(ctx, z)
        y = net.emulate(atm.reshape(15, -1))
        with kernels.unfused():
            atm_plain = net.sample_pixels(ctx, z)
            y_plain = net.emulate(atm.reshape(15, -1))
        plain = net.sample(ctx.repeat_interleave(5, dim=0), z.reshape(15, -1))
    torch.testing.assert_close(atm, atm_plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(atm.reshape(15, -1), plain, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(y, y_plain, atol=1e-5, rtol=1e-5)


def test_load_model_zeroes_tiny_weights_only(tmp_path):
    net = ConditionalINN(CINNConfig(n_blocks=2, subnet_hidden=16, cond_hidden=16, emulator_hidden=16))
    w = net.emulator[0].weight
    with torch.no_grad():
        w[0, :4] = torch.tensor([1e-40, -1e-35, 1e-31, 1e-20])  # subnormal, tiny, tiny, kept
    before = {k: v.clone() for k, v in net.state_dict().items()}
    path = save_checkpoint(tmp_path / "m.pt", net)
    loaded = load_model(path)
    after = loaded.state_dict()
    np.testing.assert_array_equal(after["emulator.0.weight"][0, :4].numpy(),
                                  np.array([0.0, 0.0, 0.0, 1e-20], dtype=np.float32))
    for k, v in before.items():  # nothing else changed
        if k != "emulator.0.weight":
            torch.testing.assert_close(after[k], v, atol=0, rtol=0)
    rest = after["emulator.0.weight"].clone()
    rest[0, :3] = before["emulator.0.weight"][0, :3]
    torch.testing.assert_close(rest, before["emulator.0.weight"], atol=0, rtol=0)
    assert zero_tiny_weights_(loaded) == 0  # idempotent


def test_the_packaged_model_loads_without_tiny_weights():
    net = load_model()
    small = sum(int(((p != 0) & (p.abs() < TINY_WEIGHT)).sum()) for p in net.parameters())
    assert small == 0
    # the file is stored in float16 (compact_checkpoint), which flushes the tiny weights of the
    # float32 original to zero; the clean-up at load handles any float32 checkpoint
    # (test_load_model_zeroes_tiny_weights_only above)
    sd = read_checkpoint(net.metadata["path"])["state_dict"]
    assert read_checkpoint(net.metadata["path"]).get("weights_dtype") == "float16"
    assert all(int(((v != 0) & (v.float().abs() < TINY_WEIGHT)).sum()) == 0 for v in sd.values()
               if v.is_floating_point())
