"""Training on several atmosphere populations at once (one store per generator)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from synthetic import FAST, TINY_C, training_set

from radynversion.datasets import LABEL_STRIDE, training_union
from radynversion.datasets import training_set as open_training_set
from radynversion.errors import StoreError
from radynversion.model import evaluation_split, sample_labels, train


@pytest.fixture()
def stores(tmp_path):
    paths = {}
    for name, n, seed in (("prior", 30, 0), ("smooth", 20, 1)):
        ds = training_set(n, seed)
        ds.to_zarr(tmp_path / f"{name}.zarr", mode="w")
        paths[name] = tmp_path / f"{name}.zarr"
    return paths


def test_union_labels_populations_and_the_first_components_split(tmp_path, stores):
    u = training_union({k: str(v) for k, v in stores.items()})
    assert u.sizes["sample"] == 50
    assert list(np.unique(u["population"].values)) == ["prior", "smooth"]
    labels = sample_labels(u)
    assert len(set(labels.tolist())) == 50
    prior = u.isel(sample=u["population"].values == "prior")
    np.testing.assert_array_equal(sample_labels(prior), np.arange(30))  # its own labels: its own split
    np.testing.assert_array_equal(evaluation_split(sample_labels(prior)), evaluation_split(np.arange(30)))
    smooth = u.isel(sample=u["population"].values == "smooth")
    np.testing.assert_array_equal(smooth["draw"].values, np.arange(20))
    assert (sample_labels(smooth) >= LABEL_STRIDE).all()
    rec = json.loads(u.attrs["components"])
    assert [r["samples"] for r in rec] == [30, 20]
    # the same through a TOML file (paths relative to it), with a fixed part of one component
    spec = tmp_path / "union.toml"
    spec.write_text('[components]\nprior = "prior.zarr"\nsmooth = "smooth.zarr"\n\n[first]\nsmooth = 10\n')
    v = open_training_set(spec)
    assert v.sizes["sample"] == 40 and int((v["population"] == "smooth").sum()) == 10


def test_union_errors_are_one_line(tmp_path, stores):
    bad = tmp_path / "bad.toml"
    bad.write_text("[first]\nprior = 3\n")
    with pytest.raises(StoreError, match=r"bad\.toml: expected a \[components\] table"):
        training_union(bad)
    with pytest.raises(StoreError, match="no training set here"):
        training_union({"prior": str(stores["prior"]), "missing": str(tmp_path / "nope.zarr")})


def test_a_model_trains_on_a_union(tmp_path, stores):
    u = training_union({k: str(v) for k, v in stores.items()})
    res = train(u, tmp_path / "run", TINY_C, dataclasses.replace(FAST, epochs=2), progress=False)
    assert np.isfinite(res.history["train_nll"]).all()


def test_balanced_populations_draw_each_generator_equally(tmp_path, stores):
    from radynversion.model.train import population_weights

    pops = np.array(["prior"] * 30 + ["smooth"] * 10)
    w = population_weights(pops)
    assert np.isclose(w.sum(), 1.0) and np.isclose(w[pops == "smooth"].sum(), 0.5)
    # an epoch drawn by the weights holds each population about equally (40 draws x 200 epochs)
    import torch

    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([torch.multinomial(torch.as_tensor(w), 40, replacement=True, generator=gen)
                       for _ in range(200)]).numpy()
    assert abs(np.mean(pops[drawn] == "smooth") - 0.5) < 0.03
    u = training_union({k: str(v) for k, v in stores.items()})
    tc = dataclasses.replace(FAST, epochs=2, balance_populations=True)
    res = train(u, tmp_path / "run", TINY_C, tc, progress=False)
    bal = torch.load(res.model_path, map_location="cpu", weights_only=False)["provenance"]["balanced_populations"]
    assert set(bal) == {"prior", "smooth"} and all(np.isclose(b["share"], 0.5) for b in bal.values())
    assert bal["prior"]["train_examples"] > bal["smooth"]["train_examples"]
    assert np.isfinite(res.history["train_nll"]).all()
    plain = train(u, tmp_path / "plain", TINY_C, dataclasses.replace(FAST, epochs=2), progress=False)
    assert "balanced_populations" not in torch.load(plain.model_path, map_location="cpu",
                                                    weights_only=False)["provenance"]


def test_population_weight_counts_a_generators_draws_more(tmp_path, stores):
    from radynversion.errors import ConfigError
    from radynversion.model.train import population_weights

    pops = np.array(["prior"] * 30 + ["smooth"] * 10)
    w = population_weights(pops, {"smooth": 3.0})
    # 10 smooth draws x 3 against 30 prior draws x 1: half the epoch each
    assert np.isclose(w.sum(), 1.0) and np.isclose(w[pops == "smooth"].sum(), 0.5)
    assert np.isclose(w[pops == "smooth"][0] / w[pops == "prior"][0], 3.0)
    u = training_union({k: str(v) for k, v in stores.items()})
    tc = dataclasses.replace(FAST, epochs=1, population_weight=(("smooth", 2.0),))
    res = train(u, tmp_path / "run", TINY_C, tc, progress=False)
    ckpt = torch.load(res.model_path, map_location="cpu", weights_only=False)
    shares = ckpt["provenance"]["weighted_populations"]
    n_p, n_s = shares["prior"]["train_examples"], shares["smooth"]["train_examples"]
    assert np.isclose(shares["smooth"]["share"], 2 * n_s / (n_p + 2 * n_s))
    # the weights are a config field: saved in the checkpoint and read back from its TOML
    assert "population_weight = [[\"smooth\", 2.0]]" in ckpt["train_config"]
    with pytest.raises(ConfigError, match="population_weight names \\['noneq'\\]"):
        train(u, tmp_path / "bad", TINY_C, dataclasses.replace(FAST, epochs=1, population_weight=(("noneq", 2.0),)),
              progress=False)
    for bad in ((("smooth", 0.0),), (("smooth", -1.0),)):
        with pytest.raises(ConfigError, match="expected \\[name, weight\\] pairs with weights > 0"):
            dataclasses.replace(FAST, population_weight=bad)
    with pytest.raises(ConfigError, match="both set"):
        dataclasses.replace(FAST, balance_populations=True, population_weight=(("smooth", 2.0),))
    with pytest.raises(ConfigError, match="expected a union of generators"):
        train(open_training_set(stores["prior"]), tmp_path / "one", TINY_C, tc, progress=False)
