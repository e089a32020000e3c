import os

import pytest

# Tests run on a 2-core machine beside other work: keep every library to one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def net():
    """A tiny untrained network, standardised on synthetic profiles, with a trust reference
    fitted on them (tests/synthetic.py)."""
    from synthetic import tiny_model, with_trust

    return with_trust(tiny_model())


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, net):
    """``net`` saved as a checkpoint file."""
    from radynversion.model import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", net)
