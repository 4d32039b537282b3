"""nca/analysis/: TensorBoard curves (merge of resumed versions, interpolation, speed-up, CLI) and token statistics."""

import json
import math
import re

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from nca.analysis import curves, token_stats
from nca.cli import main as nca_main
from nca.datamodules.shards import ShardWriter
from nca.automaton.complexity import gzip_ratio


def _log(directory, scalars: dict[str, list[tuple[int, float]]]) -> None:
    w = SummaryWriter(str(directory))
    for tag, points in scalars.items():
        for step, value in points:
            w.add_scalar(tag, value, step)
    w.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """scratch: version_0 to step 60, resumed from step 30 into version_1 (to 50); nca: one version."""
    root = tmp_path_factory.mktemp("runs")
    _log(root / "scratch" / "version_0", {
        "val/ppl": list(zip([10, 20, 30, 40, 50, 60], [10, 8, 6, 5, 4.8, 1.0])),
        "train/loss": [(10, 3.0), (20, 2.5)],
        "train/tokens_seen": [(s, 100.0 * s) for s in (10, 20, 30, 40, 50, 60)],
    })
    _log(root / "scratch" / "version_1", {
        "val/ppl": list(zip([30, 40, 50], [3.5, 4.5, 4.0])),
        "train/tokens_seen": [(s, 100.0 * s) for s in (30, 40, 50)],
    })
    _log(root / "nca" / "version_0", {
        "val/ppl": list(zip([10, 20, 30], [9, 5, 3.0])),
        "train/tokens_seen": [(s, 100.0 * s) for s in (10, 20, 30)],
    })
    return root


# scratch merged: 10:10, 20:8, 30:3.5, 40:4.5, 50:4.0 (final 4.0, first reached at 20 + 4/4.5*10 = 260/9)
# nca reaches 4.0 at 20 + (5-4)/(5-3)*10 = 25, so the speed-up is (260/9)/25.
SCRATCH_TO_FINAL = 260 / 9
NCA_SPEEDUP = SCRATCH_TO_FINAL / 25


def test_resumed_versions_merge_and_later_version_wins(runs):
    steps, values = curves.load_scalars(runs / "scratch", "val/ppl")
    assert steps.tolist() == [10, 20, 30, 40, 50]  # v0's 60 belongs to the abandoned branch
    assert values.tolist() == [10, 8, 3.5, 4.5, 4.0]
    steps, values = curves.load_scalars(runs / "scratch" / "version_0", "val/ppl")  # one version alone
    assert steps.tolist() == [10, 20, 30, 40, 50, 60] and values[-1] == 1.0
    steps, values = curves.load_scalars(runs / "scratch", "train/loss")  # a tag only the old version has
    assert steps.tolist() == [10, 20] and values.tolist() == [3.0, 2.5]


def test_steps_to_reach_interpolates():
    steps, values = np.array([10, 20, 30]), np.array([9.0, 5.0, 3.0])
    assert curves.steps_to_reach(steps, values, 5.0) == 20.0  # exactly on a point
    assert curves.steps_to_reach(steps, values, 4.0) == pytest.approx(25.0)
    assert curves.steps_to_reach(steps, values, 8.0) == pytest.approx(12.5)
    assert curves.steps_to_reach(steps, values, 9.5) == 10.0  # already below at the first point
    assert curves.steps_to_reach(steps, values, 2.0) is None
    assert curves.steps_to_reach(steps, np.array([9.0, 6.0, 4.0]), 5.0) == pytest.approx(25.0)  # first crossing only
    assert curves.steps_to_reach(steps, np.array([np.nan, np.inf, 4.0]), 5.0) == 30.0  # non-finite never counts
    with pytest.raises(ValueError, match="strictly increasing"):
        curves.steps_to_reach(np.array([10, 10]), np.array([1.0, 2.0]), 1.5)
    with pytest.raises(ValueError, match="one length"):
        curves.steps_to_reach(np.array([10, 20]), np.array([1.0]), 1.5)


def test_speedup_matches_hand_computation(runs):
    assert curves.speedup(runs / "scratch", runs / "nca") == pytest.approx(NCA_SPEEDUP)
    assert curves.speedup(runs / "scratch", runs / "scratch") == pytest.approx(1.0)
    # nca's final 3.0 is never reached by scratch
    assert curves.speedup(runs / "nca", runs / "scratch") is None
    # ready curves work too
    assert curves.speedup((np.array([0, 10]), np.array([2.0, 1.0])), (np.array([0, 5]), np.array([2.0, 1.0]))) == 2.0


def test_tokens_aligned_by_step(runs):
    tokens = curves.tokens_at(runs / "scratch", np.array([5, 25, 50, 70]))
    assert tokens.tolist() == pytest.approx([500, 2500, 5000, 7000])


def test_errors_name_the_problem(runs, tmp_path):
    (tmp_path / "empty" / "version_0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        curves.load_scalars(tmp_path / "empty", "val/ppl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        curves.load_scalars(tmp_path / "missing", "val/ppl")
    with pytest.raises(KeyError, match=r"val/lss.*train/loss.*train/tokens_seen.*val/ppl"):
        curves.load_scalars(runs / "scratch", "val/lss")


def test_cli_writes_png_and_json(runs, tmp_path, capsys):
    out = tmp_path / "plots" / "curves.png"
    rc = nca_main(["curves", "--runs", f"scratch={runs / 'scratch'}", f"nca={runs / 'nca'}", "--baseline", "scratch",
                      "--tag", "val/ppl", "--x", "tokens", "--out", str(out)])
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["baseline"] == "scratch" and report["tag"] == "val/ppl"
    rows = {r["run"]: r for r in report["runs"]}
    assert rows["scratch"]["final"] == 4.0 and rows["scratch"]["final_step"] == 50
    assert rows["scratch"]["speedup"] == pytest.approx(1.0)
    assert rows["nca"]["speedup"] == pytest.approx(NCA_SPEEDUP)
    assert rows["nca"]["steps_to_baseline_final"] == pytest.approx(25.0)
    printed = capsys.readouterr().out
    assert f"{NCA_SPEEDUP:.2f}" in printed and "nca" in printed
    before = out.read_bytes()
    assert nca_main(["curves", "--runs", f"scratch={runs / 'scratch'}", "--out", str(out)]) == 2  # never overwrites
    assert out.read_bytes() == before and "already exist" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--baseline", "c4"], "--baseline 'c4' is not one of"),
    (["--tag", "val/nope"], "its scalar tags are: .*val/ppl"),
])
def test_cli_errors(runs, tmp_path, capsys, args, message):
    rc = nca_main(["curves", "--runs", f"scratch={runs / 'scratch'}", "--out", str(tmp_path / "c.png"), *args])
    assert rc == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "c.png").exists()


def test_cli_rejects_bad_run_items():
    with pytest.raises(ValueError, match="NAME=DIR"):
        curves.parse_runs(["runs/scratch"])
    with pytest.raises(ValueError, match="given twice"):
        curves.parse_runs(["a=x", "a=y"])


# -- token statistics ------------------------------------------------------------------------------
TEXT_ROWS = np.array([[0, 0, 1, 2], [0, 1, 1, 3], [4, 4, 4, 4]])


def _entropy(counts) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts)


@pytest.fixture
def text_corpus(tmp_path):
    with ShardWriter(tmp_path / "text", row_len=4, vocab_size=6, rows_per_shard=2) as w:  # two shards
        w.write(TEXT_ROWS)
    return tmp_path / "text"


@pytest.fixture
def nca_corpus(tmp_path):
    # 2 states, 4x4 grid, 2x2 patches: 16 patch ids, <start> = 16, <end> = 17, frames of 6 ids
    rows = np.array([[16, 1, 2, 3, 4, 17, 16, 1, 2, 3, 4, 17],
                     [16, 0, 0, 0, 0, 17, 16, 15, 0, 15, 0, 17]])
    with ShardWriter(tmp_path / "nca", row_len=12, vocab_size=18, mask_first=5,
                     metadata={"nca": {"n_states": 2, "grid": 4, "patch": 2}}) as w:
        w.write(rows)
    return tmp_path / "nca", rows


def test_text_corpus_counts_and_entropy(text_corpus):
    s = token_stats.corpus_stats(text_corpus, top_k=3, window=100)
    # counts: 0:3, 1:3, 2:1, 3:1, 4:4 of 12 ids
    assert (s["rows"], s["corpus_rows"], s["tokens"], s["distinct"]) == (3, 3, 12, 5)
    assert s["entropy_bits"] == pytest.approx(_entropy([3, 3, 1, 1, 4]))
    assert [(t["id"], t["count"]) for t in s["top"]] == [(4, 4), (0, 3), (1, 3)]  # ties by id
    assert s["top"][0]["freq"] == pytest.approx(4 / 12)
    assert s["kind"] == "text" and s["delimiter_frac"] is None
    assert s["gzip_windows"] == 3
    assert s["gzip_median"] == pytest.approx(np.median([gzip_ratio(r) for r in TEXT_ROWS]))


def test_nca_corpus_delimiters_and_gzip_without_them(nca_corpus):
    directory, rows = nca_corpus
    s = token_stats.corpus_stats(directory)
    assert s["kind"] == "nca"
    assert s["delimiter_frac"] == pytest.approx(8 / 24)
    assert s["gzip_window"] == 10 * 4  # complexity probe: 10 frames of 4 patches
    patch_only = [r[r < 16] for r in rows]
    assert s["gzip_median"] == pytest.approx(np.median([gzip_ratio(r) for r in patch_only]))
    # ids: 16 x4, 17 x4, 0 x6, 1 x2, 2 x2, 3 x2, 4 x2, 15 x2
    assert s["distinct"] == 8
    assert s["entropy_bits"] == pytest.approx(_entropy([4, 4, 6, 2, 2, 2, 2, 2]))


def test_gzip_measured_on_windows_of_the_probe_length(tmp_path):
    row = np.random.default_rng(0).integers(0, 50, size=(1, 400))
    with ShardWriter(tmp_path / "long", row_len=400, vocab_size=50) as w:
        w.write(row)
    s = token_stats.corpus_stats(tmp_path / "long", windows=1)
    assert s["gzip_window"] == 360  # default: as long as the `nca complexity` probe (10 frames x 36 patches)
    slices = [gzip_ratio(row[0, o : o + 360]) for o in range(41)]
    assert any(s["gzip_median"] == pytest.approx(r, abs=1e-12) for r in slices)
    assert s["gzip_median"] != pytest.approx(gzip_ratio(row[0]), abs=1e-12)


def test_row_sample_is_seeded_subset(text_corpus):
    a = token_stats.corpus_stats(text_corpus, max_rows=2, seed=3)
    assert a == token_stats.corpus_stats(text_corpus, max_rows=2, seed=3)
    assert (a["rows"], a["tokens"]) == (2, 8)
    pairs = [np.concatenate([TEXT_ROWS[i], TEXT_ROWS[j]]) for i, j in [(0, 1), (0, 2), (1, 2)]]
    options = [(len(set(p.tolist())), _entropy(np.bincount(p)[np.bincount(p) > 0].tolist())) for p in pairs]
    assert any(a["distinct"] == d and a["entropy_bits"] == pytest.approx(h) for d, h in options)
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        token_stats.corpus_stats(text_corpus, max_rows=0)


def test_token_stats_cli(text_corpus, nca_corpus, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert nca_main(["token-stats", str(text_corpus), str(nca_corpus[0]), "--json", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(str(tmp_path))]
    assert len(lines) == 2 and "[text]" in lines[0] and "delimiters 33.33%" in lines[1]
    stats = json.loads(out.read_text())
    assert [s["distinct"] for s in stats] == [5, 8]
    assert nca_main(["token-stats", str(text_corpus), "--json", str(out)]) == 2  # never overwrites
    assert json.loads(out.read_text()) == stats and "already exists" in capsys.readouterr().err
    assert nca_main(["token-stats", str(tmp_path / "nothing")]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err


# -- pictures: log-axis perplexity and the Zipf plot ------------------------------------------------
def test_perplexity_is_drawn_on_a_log_axis(runs):
    assert curves.y_scale("val/ppl") == "log" and curves.y_scale("val/loss") == "linear"
    assert curves.y_scale("val/ppl", "linear") == "linear"
    with pytest.raises(ValueError, match="auto, log or linear"):
        curves.y_scale("val/ppl", "symlog")
    fig = curves.figure({"scratch": runs / "scratch", "nca": runs / "nca"}, "scratch", "val/ppl")
    assert fig.axes[0].get_yscale() == "log" and "log scale" in fig.axes[0].get_ylabel()
    assert curves.figure({"s": runs / "scratch"}, "s", "train/loss").axes[0].get_yscale() == "linear"


def test_zipf_slope_of_an_exact_power_law():
    counts = np.round(1e9 / np.arange(1, 3001) ** 1.3)  # rank r has count ~ r^-1.3
    np.random.default_rng(0).shuffle(counts)  # ids in any order: ranks come from the counts
    freqs = token_stats.rank_frequency(np.concatenate([counts, np.zeros(5)]))
    assert len(freqs) == 3000 and freqs.sum() == pytest.approx(1.0) and np.all(np.diff(freqs) <= 0)
    slope, ranks = token_stats.zipf_slope(freqs)
    assert slope == pytest.approx(-1.3, abs=1e-3) and ranks == [10, 1000]
    assert token_stats.zipf_slope(freqs[:500])[1] == [10, 500]  # clipped to the ids seen
    assert token_stats.zipf_slope(freqs[:11]) == (None, [10, 11])  # too few ranks to fit
    with pytest.raises(ValueError, match="1 <= lo < hi"):
        token_stats.zipf_slope(freqs, (0, 10))


def test_token_stats_zipf_plot(text_corpus, nca_corpus, tmp_path, capsys):
    out = tmp_path / "zipf.png"
    assert nca_main(["token-stats", str(text_corpus), str(nca_corpus[0]), "--zipf", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "zipf n/a" in capsys.readouterr().out  # 5 ids: no fit
    assert nca_main(["token-stats", str(text_corpus), "--zipf", str(out)]) == 2
    assert "already exists; choose another --zipf" in capsys.readouterr().err
    assert nca_main(["token-stats", str(text_corpus), str(nca_corpus[0]), "--zipf", str(tmp_path / "z2.png"), "--labels", "owt"]) == 2
    assert "one label per directory" in capsys.readouterr().err and not (tmp_path / "z2.png").exists()
