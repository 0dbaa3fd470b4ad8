import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Two threads on a shared 2-core machine ran up to 9x slower than one.
    torch.set_num_threads(1)
    yield
