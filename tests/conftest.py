"""Fixtures and hooks shared by the test files; helpers live in ``tests/helpers`` (tests never import each other)."""

import logging

import pytest
import torch

from tests.helpers.tokenizers import write_tokenizer

# Lightning stops its logger propagating when it is imported before logging has a handler, as it is here
# (at collection); caplog reads messages through the root logger.
logging.getLogger("lightning.pytorch").propagate = True


def pytest_collection_modifyitems(config, items):
    """`slow` tests first (the two xdist workers start on the long ones and the short ones fill in after, instead
    of one worker finishing a long test alone); skip `cuda`-marked tests where no GPU exists (they run unchanged
    where one does)."""
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: each file keeps its order
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


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A byte-level tokenizer (256 byte ids + <|endoftext|> = 256), no merges: made here, no shared data."""
    return str(write_tokenizer(tmp_path_factory.mktemp("tok")))
