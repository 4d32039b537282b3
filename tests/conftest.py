import json
from pathlib import Path

import pytest
import torch

from datamodules.tokenizers import _byte_decoder

TO_CHAR = {b: c for c, b in _byte_decoder().items()}  # byte -> GPT-2's printable character


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


def write_bpe(directory: Path, merges: list[tuple[str, str]], names=("encoder.json", "vocab.bpe")) -> Path:
    """A tiny GPT-2-format vocabulary: 256 byte tokens in tiktoken's order, the merges, then <|endoftext|>."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = {c: i for i, c in enumerate(_byte_decoder())}
    for a, b in merges:
        encoder[a + b] = len(encoder)
    encoder["<|endoftext|>"] = len(encoder)
    (directory / names[0]).write_text(json.dumps(encoder))
    (directory / names[1]).write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory
