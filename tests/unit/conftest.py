"""Unit tests run torch and numpy's BLAS on one thread.

On a busy 2-core machine the idle threads of two libraries spin against each other and make tiny
ops up to ten times slower; the results do not depend on the thread count.
"""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)
