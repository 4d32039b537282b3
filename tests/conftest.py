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
def _small_threads():
    # CI has 2 cores; keep intra-op threads bounded so parallel tools do not oversubscribe.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
