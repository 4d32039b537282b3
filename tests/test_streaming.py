"""Generated streams (NCA, Dyck) resume where a checkpoint left them, through a real Trainer."""

import pickle

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from nca.datamodules.dyck import DyckDataModule
from nca.datamodules.nca import NCADataModule
from nca.datamodules.shards import ShardWriter
from nca.datamodules.streaming import ShardRows
from nca.datamodules.text import TextDataModule
from nca.automaton.config import NCAConfig
from tests.helpers.data import documents, write_jsonl

MAKERS = {
    "dyck": lambda: DyckDataModule(seq_len=8, batch_size=2, num_workers=0, seed=3),
    "nca": lambda: NCADataModule(seq_len=24, batch_size=2, nca=NCAConfig(n_states=3, grid=4, patch=2), band=None,
                                 val_rules=None, val_sequences=2, generate_group=2, seed=3),
}


class Recorder(L.LightningModule):
    def __init__(self, vocab_size):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 4)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].clone())
        return self.emb(batch["input_ids"]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm, max_steps, tmp_path, ckpt_path=None, callbacks=()):
    model = Recorder(dm.vocab_size)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=list(callbacks),
                        enable_checkpointing=bool(callbacks), default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model.seen


@pytest.fixture
def text_maker(tmp_path, tok_dir):
    src = write_jsonl(tmp_path / "corpus.jsonl", documents(60))
    make = lambda: TextDataModule(str(src), tokenizer=str(tok_dir), seq_len=8, batch_size=2, num_workers=0,  # noqa: E731
                                  cache_dir=str(tmp_path / "cache"), seed=3)
    make().prepare_data()
    return make


@pytest.mark.parametrize("name", sorted(MAKERS) + ["text"])
def test_resumed_run_continues_the_stream(tmp_path, name, request):
    make = request.getfixturevalue("text_maker") if name == "text" else MAKERS[name]
    tmp_path = tmp_path / "ckpt"
    dm = make()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    reference = [next(it)["input_ids"] for _ in range(5)]
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    seen = fit(make(), 3, tmp_path, callbacks=[ckpt])
    assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, reference[:3]))
    step2 = next(p for p in tmp_path.glob("*.ckpt") if "step=2" in p.name)  # saved mid-run, after 2 batches
    resumed = fit(make(), 5, tmp_path, ckpt_path=step2)
    assert len(resumed) == 3 and all(torch.equal(a, b) for a, b in zip(resumed, reference[2:]))


def test_resuming_with_another_batch_size_is_refused():
    dm = MAKERS["nca"]()
    with pytest.raises(ValueError, match="same batch size"):
        dm.load_state_dict({"train_batches": 4, "batch_size": 7})


def test_shard_rows_pickle_without_corpus_data(tmp_path):
    with ShardWriter(tmp_path / "c", row_len=65, vocab_size=1000) as w:
        w.write(np.random.default_rng(0).integers(0, 1000, (2000, 65)))
    rows = ShardRows(tmp_path / "c", batch_size=4, seed=0)
    first = rows.batches([0])[0]["input_ids"]  # opens the memmaps in this process
    clone = pickle.loads(pickle.dumps(rows))
    assert len(pickle.dumps(rows)) < 2000  # a path and a few ints, not 2000 x 65 ids
    assert torch.equal(clone.batches([0])[0]["input_ids"], first)
