"""nca.analysis.band_transfer and `nca band-transfer`: label syntax, seed-paired changes and speed-ups, the picture."""

import json

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from nca.analysis import band_transfer as bt
from nca.cli import main


def _log(directory, points):
    w = SummaryWriter(str(directory))
    for step, value in points:
        w.add_scalar("val/ppl", value, step)
    w.close()


STEPS = [10, 20, 30, 40]
CURVES = {  # (domain, band, seed) -> val/ppl at STEPS
    ("code", "scratch", 0): [10.0, 8.0, 6.0, 5.0],
    ("code", "scratch", 1): [10.0, 9.0, 7.0, 6.0],
    ("code", "30-40", 0): [9.0, 6.0, 5.0, 4.5],   # reaches 5.0 at 30
    ("code", "30-40", 1): [9.0, 6.0, 5.4, 5.1],   # reaches 6.0 at 20
    ("code", "50+", 0): [10.0, 9.0, 8.0, 7.0],    # never reaches 5.0
    ("code", "50+", 1): [10.0, 8.0, 6.0, 5.5],    # reaches 6.0 at 30
    ("web", "scratch", 0): [20.0, 15.0, 12.0, 10.0],
    ("web", "0.5-1.0", 0): [18.0, 12.0, 10.0, 9.0],  # reaches 10.0 at 30
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bt")
    items = []
    for (domain, band, seed), values in CURVES.items():
        d = root / f"{domain}_{band.replace('+', 'p')}_{seed}" / "version_0"
        _log(d, zip(STEPS, values))
        items.append(f"{domain}/{band}/{seed}={d.parent}")
    return items


def test_label_syntax():
    assert bt.parse_label("code/30-40/2") == bt.RunLabel("code", "30-40", 2)
    assert bt.parse_label("web/scratch/0").is_scratch
    for bad, message in [("code/30-40", "DOMAIN/BAND/SEED"), ("code/30-40/x", "seed 'x'"),
                         ("co de/30-40/0", "domain"), ("code/warm/0", "cannot read band"), ("code//0", "DOMAIN/BAND/SEED")]:
        with pytest.raises(ValueError, match=message):
            bt.parse_label(bad)


def test_runs_are_validated_before_reading(runs, tmp_path):
    with pytest.raises(ValueError, match="given twice"):  # one band, two spellings
        bt.parse_runs([runs[2], runs[2].replace("30-40", "0.3-0.4")])
    with pytest.raises(ValueError, match=r"add code/scratch/0=DIR"):
        bt.parse_runs([runs[2]])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bt.parse_runs([f"code/scratch/0={tmp_path / 'nope'}"])
    with pytest.raises(ValueError, match="LABEL=DIR|DOMAIN/BAND/SEED=DIR"):
        bt.parse_runs(["code/scratch/0"])


def test_paired_changes_speedups_and_intervals(runs):
    table = bt.transfer_table(bt.parse_runs(runs))
    by_label = {r["label"]: r for r in table["runs"]}
    assert by_label["code/30-40/0"]["final_change"] == pytest.approx(4.5 / 5.0 - 1)
    assert by_label["code/30-40/1"]["final_change"] == pytest.approx(5.1 / 6.0 - 1)
    assert by_label["code/30-40/0"]["speedup"] == pytest.approx(40 / 30)
    assert by_label["code/30-40/1"]["speedup"] == pytest.approx(40 / 20)
    assert by_label["code/50+/0"]["speedup"] is None
    summary = {(s["domain"], s["band"]): s for s in table["summary"]}
    mid = summary[("code", "30-40")]
    changes = np.array([4.5 / 5 - 1, 5.1 / 6 - 1])
    assert mid["final_change"]["mean"] == pytest.approx(changes.mean())
    # t(0.975, 1 dof) = 12.706: half-width = t * sd / sqrt(2)
    assert mid["final_change"]["ci95"] == pytest.approx(12.7062 * changes.std(ddof=1) / np.sqrt(2), rel=1e-4)
    top = summary[("code", "50+")]
    assert top["never_reached"] == 1 and top["speedup"]["n"] == 1 and top["speedup"]["ci95"] is None
    assert top["speedup"]["mean"] == pytest.approx(40 / 30)
    assert summary[("web", "0.5-1.0")]["final_change"]["ci95"] is None  # one seed: no interval
    assert [s["band"] for s in table["summary"] if s["domain"] == "code"] == ["30-40", "50+"]  # ordered by band


def test_corpus_ratio_from_number_or_complexity_json(tmp_path):
    assert bt.corpus_ratio("0.34") == 0.34
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"files": {"code.py": {"median": 0.31}}}))
    assert bt.corpus_ratio(str(one)) == 0.31
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"files": {"a.txt": {"median": 0.5}, "b.py": {"median": 0.3}}}))
    assert bt.corpus_ratio(f"{two}#b.py") == 0.3
    with pytest.raises(ValueError, match="pick one"):
        bt.corpus_ratio(str(two))
    with pytest.raises(ValueError, match="no file 'c'"):
        bt.corpus_ratio(f"{two}#c")
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        bt.corpus_ratio("3")
    with pytest.raises(FileNotFoundError, match="neither a number"):
        bt.corpus_ratio(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="DOMAIN=FILE_OR_NUMBER"):
        bt.parse_corpus_ratios(["0.3"])


def test_cli_writes_picture_and_table_and_never_overwrites(runs, tmp_path, capsys):
    out = tmp_path / "bt"
    assert main(["band-transfer", "--runs", *runs, "--out", str(out), "--corpus_ratio", "code=0.36", "web=0.55"]) == 0
    assert (out / "band_transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "band_transfer.json").read_text())
    assert report["corpus_ratio"] == {"code": 0.36, "web": 0.55}
    assert {(s["domain"], s["band"]) for s in report["summary"]} == {("code", "30-40"), ("code", "50+"), ("web", "0.5-1.0")}
    printed = capsys.readouterr().out
    assert "(1 never)" in printed and "30-40" in printed
    before = (out / "band_transfer.png").read_bytes()
    assert main(["band-transfer", "--runs", *runs, "--out", str(out)]) == 2
    assert "already exist" in capsys.readouterr().err and (out / "band_transfer.png").read_bytes() == before


def test_cli_errors_before_work(runs, tmp_path, capsys):
    assert main(["band-transfer", "--runs", *runs, "--out", str(tmp_path / "x"), "--corpus_ratio", "math=0.4"]) == 2
    assert "no --runs label names" in capsys.readouterr().err
    assert main(["band-transfer", "--runs", runs[2], "--out", str(tmp_path / "y")]) == 2
    assert "scratch run of the same seed" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
