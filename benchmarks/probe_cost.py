"""The training-time cost of ``InductionProbe`` at its default interval (goal: under 2%).

Trains the model of ``configs/stage1.yaml`` (2 layers, 128 wide, 4 heads; batches of 8 x 256) twice for the
same steps, without and with the probe, and prints both wall times and, robust to other load on the machine,
the probe's own time as a share of the probed run's training time (the A/B difference of two runs is
dominated by noise when the cores are shared). Batches are fixed random NCA-vocabulary rows held in memory, so data generation does not dilute the
overhead (the real stage-1 run also spends time generating trajectories: its overhead is smaller).

    OMP_NUM_THREADS=1 python benchmarks/probe_cost.py --steps 300      # numbers go to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from nca.lit_modules.causal_lm import CausalLM
from nca.lit_modules.probes import InductionProbe
from nca.automaton.tokenize import PatchTokenizer

MODEL = {"block_size": 1024, "n_layer": 2, "n_embd": 128, "n_head": 4, "intermediate_size": 512}


class FixedRows(L.LightningDataModule):
    """``batches`` fixed random batches, cycled; the NCA tokenizer so the probe takes its per-frame path."""

    def __init__(self, batch_size: int, seq_len: int, batches: int = 8, seed: int = 0):
        super().__init__()
        self.tokenizer = PatchTokenizer()
        self.vocab_size = self.tokenizer.vocab_size
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, self.tokenizer.start_id, (batches * batch_size, seq_len + 1), generator=g)
        self.items = [{"input_ids": r[:, :-1], "labels": r[:, 1:]} for r in rows.split(batch_size)]

    def train_dataloader(self):
        return DataLoader(self.items * 10_000, batch_size=None)

    def val_dataloader(self):
        return DataLoader(self.items[:1], batch_size=None)


class ProbeTimer(InductionProbe):
    """The probe, timing each of its measurements."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seconds: list[float] = []

    def _probe(self, trainer, pl_module):
        start = time.perf_counter()
        before = self._last_step
        super()._probe(trainer, pl_module)
        if self._last_step != before:
            self.seconds.append(time.perf_counter() - start)


def fit_seconds(steps: int, batch_size: int, seq_len: int, probe: InductionProbe | None) -> float:
    torch.manual_seed(0)
    module = CausalLM(config=MODEL, vocab_size=PatchTokenizer().vocab_size, lr=2e-3, warmup_steps=30)
    logger = L.pytorch.loggers.TensorBoardLogger(tempfile.mkdtemp(prefix="probe_cost_"))  # the image is logged too
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[probe] if probe else [])
    start = time.perf_counter()
    trainer.fit(module, datamodule=FixedRows(batch_size, seq_len))
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--every-n-steps", type=int, default=InductionProbe().every_n_steps, help="default: the probe's own")
    a = p.parse_args()
    without = fit_seconds(a.steps, a.batch_size, a.seq_len, None)
    probe = ProbeTimer(every_n_steps=a.every_n_steps)
    with_probe = fit_seconds(a.steps, a.batch_size, a.seq_len, probe)
    probing = sum(probe.seconds)
    training = with_probe - probing
    print(f"{a.steps} steps of {a.batch_size} x {a.seq_len}, probe every {a.every_n_steps} steps, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"A/B wall time: without probe {without:.1f} s ({without / a.steps * 1e3:.0f} ms/step), with probe "
          f"{with_probe:.1f} s: {100 * (with_probe / without - 1):+.2f}% (noise-dominated on shared cores)")
    print(f"within the probed run: {len(probe.seconds)} probes ({', '.join(f'{t * 1e3:.0f}' for t in probe.seconds)} ms) "
          f"= {100 * probing / training:.2f}% of its {training:.1f} s of training; one probe per {a.every_n_steps} steps "
          f"costs {100 * (probing / len(probe.seconds)) / (a.every_n_steps * training / a.steps):.2f}%")

if __name__ == "__main__":
    main()
