import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Skip `cuda`-marked tests where no GPU exists; they run unchanged where one does."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tests' tiny models and generators run faster without OpenMP hand-offs,
    and much faster when the 2 CI cores are shared with DataLoader workers or other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
