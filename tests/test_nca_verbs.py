"""`python -m nca generate | preview | complexity`."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from nca.datamodules.nca import NCADataModule
from nca.datamodules.shards import TokenShards
from nca.cli import main
from nca.automaton.complexity import Band, rule_ratios
from nca.automaton.config import NCAConfig
from nca.automaton.stream import NCAStream
from tests.helpers.tokenizers import write_bpe

SMALL = ["--nca.n_states", "4", "--nca.grid", "6", "--nca.patch", "2"]


def run(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argument errors exit through the parser
        return e.code


def test_generate_writes_the_stream_with_a_manifest(tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["generate", "--out", str(out), "--tokens", "900", "--seq_len", "48", "--band", "0.3-1.0",
            "--chunk", "8", "--workers", "0", "--seed", "5", *SMALL]
    assert run(argv) == 0
    shards = TokenShards(out)
    m = shards.manifest
    assert m.rows == 19 and m.row_len == 49 and m.vocab_size == 4**4 + 2 and m.mask_first == 10
    assert m.metadata["seed"] == 5 and m.metadata["band"] == [0.3, 1.0] and m.metadata["nca"]["n_states"] == 4
    stats = m.metadata["band_stats"]
    assert stats["candidates_tried"] >= 19 and all(0.3 < q < 1.0 for q in stats["ratio_quantiles_5_25_50_75_95"])
    assert stats["sequences_generated"] == 24  # 3 chunks of 8; the last one only partly written
    assert stats["acceptance"] == pytest.approx(24 / stats["candidates_tried"])
    expected = NCAStream(NCAConfig(n_states=4, grid=6, patch=2), 48, (0.3, 1.0), seed=5).rows(torch.arange(19))
    assert np.array_equal(np.stack(list(shards)), expected.numpy())
    dm = NCADataModule(seq_len=48, nca=NCAConfig(n_states=4, grid=6, patch=2), batch_size=4, corpus=str(out), val_rules=None)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["input_ids"].shape == (4, 48)
    # never overwrite: the second run fails before doing any work and leaves the corpus as it was
    before = (out / "manifest.json").read_bytes()
    assert run(argv) != 0
    assert "already exists" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == before


def test_generate_records_custom_hidden_widths(tmp_path):
    assert run(["generate", "--out", str(tmp_path / "h"), "--tokens", "48", "--seq_len", "48", "--band", "none",
                "--workers", "0", "--nca.hidden", "[8, 32]", *SMALL]) == 0
    assert TokenShards(tmp_path / "h").manifest.metadata["nca"]["hidden"] == [8, 32]


def test_generate_is_the_same_with_worker_processes(tmp_path):
    common = ["--tokens", "400", "--seq_len", "48", "--chunk", "4", "--band", "none", *SMALL]
    assert run(["generate", "--out", str(tmp_path / "a"), "--workers", "0", *common]) == 0
    assert run(["generate", "--out", str(tmp_path / "b"), "--workers", "2", *common]) == 0
    assert (tmp_path / "a" / "shard_00000.bin").read_bytes() == (tmp_path / "b" / "shard_00000.bin").read_bytes()


def test_generate_rejects_an_impossible_band_before_writing(tmp_path):
    with pytest.raises(ValueError, match="impossible band"):
        main(["generate", "--out", str(tmp_path / "x"), "--tokens", "100", "--band", "0.6-0.5"])
    assert not (tmp_path / "x").exists()


def test_preview_renders_png_and_gif_per_band(tmp_path, capsys):
    assert run(["preview", "--out", str(tmp_path), "--bands", "[30-40, 50+]", "--rules", "2", "--frames", "3",
                "--scale", "2", *SMALL]) == 0
    png = Image.open(tmp_path / "band_50plus.png")
    assert png.width > 3 * 12 + 2 * 2 and png.height > 2 * 12 + 2  # labelled: title, frame indices, rule labels around the grids
    gif = Image.open(tmp_path / "band_30-40.gif")
    assert gif.n_frames == 3
    before = (tmp_path / "band_50plus.png").read_bytes()
    assert run(["preview", "--out", str(tmp_path), "--bands", "[50+]", "--rules", "1", *SMALL]) != 0  # never overwrites
    assert "already exist" in capsys.readouterr().err
    assert (tmp_path / "band_50plus.png").read_bytes() == before


def test_complexity_reports_bands_and_files(tmp_path, capsys):
    tok = write_bpe(tmp_path / "tok", merges=[("t", "h")])
    repeated, noisy = tmp_path / "repeated.txt", tmp_path / "noisy.txt"
    repeated.write_text("the cat sat on the mat and then the dog ate the hat. " * 200)
    rng = np.random.default_rng(0)
    noisy.write_text("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz .,"), 10_000)))
    assert run(["complexity", "--rules", "64", "--out", str(tmp_path / "cx"), "--file", f"[{repeated}, {noisy}]",
                "--tokenizer", str(tok), "--seed", "3", *SMALL]) == 0
    report = json.loads((tmp_path / "cx" / "complexity.json").read_text())
    ratios = rule_ratios(torch.arange(64) * 2, NCAConfig(n_states=4, grid=6, patch=2), 3)
    for text, band in zip(["20-30", "30-40", "40-50", "50+"], ["20-30", "30-40", "40-50", "50+"]):
        assert report["pass_rate"][text] == pytest.approx(Band.parse(band).contains(ratios).mean())
    files = report["files"]
    assert files[str(repeated)]["windows"] > 1
    assert files[str(repeated)]["median"] < files[str(noisy)]["median"]  # repetition compresses better
    assert (tmp_path / "cx" / "histogram.png").stat().st_size > 1000
    assert "random rules" in capsys.readouterr().out
    assert run(["complexity", "--rules", "8", "--out", str(tmp_path / "cx"), *SMALL]) != 0  # never overwrites
    assert "already exist" in capsys.readouterr().err


def test_complexity_missing_file_is_a_clear_error(tmp_path, capsys):
    assert run(["complexity", "--rules", "8", "--file", f"[{tmp_path / 'nope.txt'}]"]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_data_verbs_read_a_config_file_and_print_theirs(tmp_path, capsys):
    (tmp_path / "gen.yaml").write_text("tokens: 96\nseq_len: 48\nband: none\nworkers: 0\nnca:\n  n_states: 4\n  grid: 6\n")
    with pytest.raises(SystemExit):
        main(["generate", "--config", str(tmp_path / "gen.yaml"), "--out", str(tmp_path / "c"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["nca"]["n_states"] == 4 and printed["nca"]["temperature"] == NCAConfig().temperature
    assert run(["generate", "--config", str(tmp_path / "gen.yaml"), "--out", str(tmp_path / "c")]) == 0
    assert TokenShards(tmp_path / "c").manifest.metadata["nca"]["grid"] == 6


@pytest.mark.parametrize("bad", [["--tokens", "0"], ["--tokens", "96", "--seq_len", "0"], ["--tokens", "96", "--chunk", "0"]])
def test_generate_refuses_sizes_that_cannot_work_before_any_work(tmp_path, capsys, bad):
    assert run(["generate", "--out", str(tmp_path / "g"), *bad, *SMALL]) == 2
    assert "need --tokens >= 1" in capsys.readouterr().err and not (tmp_path / "g").exists()
