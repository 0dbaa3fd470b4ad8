import pytest
import torch

from skocc.datasets import one_class_digits_split


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Two threads on a shared 2-core machine ran up to 9x slower than one.
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def digits():
    """The digits split every behaviour test shares: X_train, X_test, y_train, y_test."""
    return one_class_digits_split(random_state=0)
