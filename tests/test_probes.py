"""InductionProbe and NCAPictures in tiny Trainer runs: the scalars and images reach TensorBoard, the model is
back in train mode, and predicted frames are the argmax under teacher forcing."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from nca.lit_modules.causal_lm import CausalLM
from nca.lit_modules.probes import InductionProbe, figure_to_array, special_ids
from nca.lit_modules.visuals import NCAPictures, predicted_frames
from nca.automaton.complexity import Band
from nca.automaton.config import NCAConfig
from nca.automaton.stream import NCAStream
from nca.automaton.tokenize import PatchTokenizer

CFG = NCAConfig(n_states=2, grid=4, patch=2)  # 16 patch ids + 2 delimiters, 6-token frames
TOKENS = PatchTokenizer.from_config(CFG)
SEQ_LEN = 47


class TinyNCAData(L.LightningDataModule):
    """NCA rows of held-out-style fresh rules, with the attributes NCADataModule exposes (cfg, band, seed, ...)."""

    def __init__(self, batch_size=4):
        super().__init__()
        self.cfg, self.band, self.seed, self.seq_len, self.tokenizer = CFG, Band.parse(None), 0, SEQ_LEN, TOKENS
        self.vocab_size, self.batch_size = TOKENS.vocab_size, batch_size

    def _batches(self, split, n):
        rows = NCAStream(CFG, SEQ_LEN, None, seed=0, split=split).rows(torch.arange(n * self.batch_size))
        labels = rows[:, 1:].clone()
        labels[:, : TOKENS.mask_first] = -100
        return [{"input_ids": i, "labels": l} for i, l in zip(rows[:, :-1].split(self.batch_size), labels.split(self.batch_size))]

    def train_dataloader(self):
        return DataLoader(self._batches("train", 3) * 4, batch_size=None)

    def val_dataloader(self):
        return DataLoader(self._batches("val", 1), batch_size=None)


def tiny_module():
    torch.manual_seed(0)
    return CausalLM(config={"block_size": 64, "n_layer": 2, "n_embd": 32, "n_head": 2, "intermediate_size": 64},
                    vocab_size=TOKENS.vocab_size, lr=1e-3, warmup_steps=1)


def run(tmp_path, callbacks, steps=6):
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="probe")
    trainer = L.Trainer(max_steps=steps, callbacks=callbacks, logger=logger, accelerator="cpu", devices=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        val_check_interval=3, check_val_every_n_epoch=None, num_sanity_val_steps=0)
    module = tiny_module()
    trainer.fit(module, datamodule=TinyNCAData())
    events = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return module, events


class TrainModeSpy(L.Callback):
    """Records whether the GPT is in train mode at every training batch (the probe must restore it)."""

    def __init__(self):
        self.modes = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.modes.append(pl_module.model.training)


def test_probe_logs_scalars_and_heatmap_every_n_steps(tmp_path):
    spy = TrainModeSpy()
    _, events = run(tmp_path, [InductionProbe(every_n_steps=2, block_len=8, sequences=2, rows=2), spy])
    tags = events.Tags()["scalars"]
    for tag in ("probe/prefix_matching_max", "probe/copying_of_top", "probe/transformerlens_max",
                "probe/induction_heads", "probe/frame_slope"):
        assert tag in tags
    steps = [e.step for e in events.Scalars("probe/prefix_matching_max")]
    assert steps == [0, 2, 4, 6]  # at the start, then every 2 optimizer steps
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("probe/prefix_matching_max"))
    assert all(math.isfinite(e.value) for e in events.Scalars("probe/frame_slope"))
    assert [e.step for e in events.Images("probe/heads")] == steps
    assert all(spy.modes) and len(spy.modes) == 6


def test_probe_icl_score_on_long_text_like_rows():
    """Rows longer than `late` give an ICL score; shorter ones only the log-t slope."""
    probe = InductionProbe(block_len=4, sequences=1, rows=2, early=2, late=10)
    module = CausalLM(config={"block_size": 16, "n_layer": 1, "n_embd": 16, "n_head": 2}, vocab_size=20)
    module.configure_model()
    batch = {"input_ids": torch.randint(0, 20, (2, 12)), "labels": torch.randint(0, 20, (2, 12))}
    long = probe._curve_scalars(module.model, batch, frame_len=None)
    short = probe._curve_scalars(module.model, {k: v[:, :6] for k, v in batch.items()}, frame_len=None)
    assert set(long) == {"probe/slope_vs_log_t", "probe/icl_score"} and set(short) == {"probe/slope_vs_log_t"}


def test_probe_avoids_special_ids_and_rejects_bad_settings():
    class Text:
        class tokenizer:
            eot_id = 7

    class Nca:
        tokenizer = TOKENS

    assert special_ids(Text()) == [7] and special_ids(Nca()) == [TOKENS.start_id, TOKENS.end_id]
    with pytest.raises(ValueError, match="every_n_steps"):
        InductionProbe(every_n_steps=0)


def test_figure_to_array_gives_rgb_pixels():
    from nca.analysis.induction import heads_figure

    image = figure_to_array(heads_figure([[0.1, 0.9]], [[-0.5, 0.5]], "t"))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_nca_pictures_log_rollouts_and_predictions(tmp_path):
    _, events = run(tmp_path, [NCAPictures(rules=2, frames=4, scale=2)])
    rollouts = events.Images("nca/rollouts")
    assert [e.step for e in rollouts] == [0]
    # 2 rules of 4 frames at 2 px per cell and 2 px gaps: 2 rows of 8 px, 4 columns of 8 px
    assert (rollouts[0].height, rollouts[0].width) == (2 * 8 + 2, 4 * 8 + 3 * 2)
    predicted = events.Images("nca/predicted_frames")
    assert [e.step for e in predicted] == [3, 6]
    assert (predicted[0].height, predicted[0].width) == (4 * 8 + 3 * 2, 3 * 8 + 2 * 2)  # true/predicted x 2 rules
    accuracy = [e.value for e in events.Scalars("nca/predicted_patch_accuracy")]
    assert len(accuracy) == 2 and all(0.0 <= a <= 1.0 for a in accuracy)


def test_predicted_frames_are_teacher_forced_argmax():
    rows = NCAStream(CFG, 4 * TOKENS.frame_len - 1, None, seed=0, split="val").rows(torch.arange(2))

    class Oracle(torch.nn.Module):
        """Predicts the true next token everywhere except patch 0 of every frame, which it calls id 5."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, idx):
            nxt = rows[:, 1: idx.shape[1] + 1].clone()
            nxt[:, torch.arange(nxt.shape[1]) % TOKENS.frame_len == 0] = 5  # position t + 1 = first patch of a frame
            return torch.nn.functional.one_hot(nxt, TOKENS.vocab_size).float()

    truth, guess = predicted_frames(Oracle(), rows, TOKENS)
    assert torch.equal(truth, TOKENS.decode(rows)[:, 1:])
    wrong = TOKENS.patch_ids(guess) != TOKENS.patch_ids(truth)
    assert not wrong[..., 1:].any()  # only patch 0 can differ, and it reads id 5
    assert (TOKENS.patch_ids(guess)[..., 0] == 5).all()
