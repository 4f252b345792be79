import numpy as np
import pytest
import torch

# The test problems are small: one thread avoids OpenMP spin-waiting when the machine is loaded.
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
