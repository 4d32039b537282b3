"""benchmarks/gpu_check: the CPU dry run prints the skip table; parts are capped, budgeted and summarised."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_shell_wrapper_without_gpu_skips_every_part_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "part" not in line]
    assert len(rows) == len(gpu_check.parts(tmp_path)) and all("| skipped " in r and "no CUDA GPU" in r for r in rows)
    assert "No CUDA GPU" in done.stdout
    assert "| fsdp-resume " in (tmp_path / "gpu_check.md").read_text()


def test_a_second_run_never_overwrites_the_first_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    (tmp_path / "gpu_check.md").write_text("earlier results")
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "gpu_check.md").read_text() == "earlier results"
    assert "skipped" in (tmp_path / "gpu_check-1.md").read_text()


def fake_part(name: str, code: str, cap: int = 30, needs: Path | None = None) -> gpu_check.Part:
    return gpu_check.Part(name, "fake", cap, [sys.executable, "-c", code], gpu_check.summarize_mfu, needs)


def test_with_a_gpu_parts_run_under_caps_and_one_failure_stops_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "Fake GPU")
    good = "print('tokens/s per device 1,234, total 1,234; model FLOPs/batch 1e12; MFU 41.5% (peak 1e15 FLOP/s)')"
    monkeypatch.setattr(gpu_check, "parts", lambda logs: [
        fake_part("crash", "raise SystemExit(3)"),
        fake_part("slow", "import time; time.sleep(30)", cap=1),
        fake_part("good", good),
        fake_part("absent", good, needs=tmp_path / "missing.py"),
    ])
    assert gpu_check.main(["check", "--out", str(tmp_path), "--budget", "60"]) == 1  # a part failed
    table = (tmp_path / "gpu_check.md").read_text()
    row = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "failed (rc 3)" in row["crash"] and "timeout" in row["slow"]
    assert "| ok " in row["good"] and "1,234 tokens/s, MFU 41.5%" in row["good"]
    assert "not available" in row["absent"] and "missing.py" in row["absent"]
    assert "raise SystemExit(3)" in (tmp_path / "gpu_check_logs" / "crash.log").read_text()


def test_parts_past_the_budget_are_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(gpu_check, "parts", lambda logs: [fake_part("first", "pass"), fake_part("second", "pass")])
    gpu_check.main(["--out", str(tmp_path), "--budget", "10"])  # under the 15 s any part needs
    assert capsys.readouterr().out.count("time budget spent") == 2


def test_summaries_read_the_benchmarks_own_lines():
    assert gpu_check.summarize_pytest("...\n===== 3 passed, 2 skipped in 4.1s =====\n") == "3 passed, 2 skipped in 4.1s"
    nca = "streamed 20,971,520 tokens in 1.9s: 11,037,642 tokens/s (0 workers, batch 1024, band ..., device cuda)"
    assert gpu_check.summarize_nca(nca) == "11,037,642 tokens/s"
    sampler = ("method                                 samples  new tok/s  speed-up\n"
               "sample, dynamic                              64    25000.4     40.0x\n"
               "sample, compiled                             64    61234.0     98.0x\n"
               "litgpt generate, one call per sample          1      625.0      1.0x\n"
               "samples of compiled equal to dynamic's: 64/64\n")
    assert gpu_check.summarize_sampler(sampler) == ("sample, dynamic: 25000.4 new tok/s; sample, compiled: 61234.0 new "
                                                    "tok/s; litgpt generate, one call per sample: 625.0 new tok/s")
    fit = ("MFU = tokens/s per device x 1.043e+10 model FLOPs per token (forward + backward, activation recompute "
           "excluded) / 9.894e+14 FLOP/s peak (NVIDIA H200, bfloat16, dense)\n"
           "step 35/40 | loss 7.1 | lr 0.0002 | 39,000 tok/s | MFU 41.1% | ETA 0m01s\n"
           "step 40/40 | loss 7.0 | lr 0.0002 | 40,100 tok/s | MFU 42.3% | ETA 0m00s\n")
    assert gpu_check.summarize_fit(fit) == "step 40: 40,100 tokens/s, MFU 42.3% at 1.043e+10 FLOPs/token"
    assert gpu_check.summarize_fit("step 5/40 | loss 9.0 | lr 1e-05 | 1,000 tok/s | ETA 1m00s") == (
        "step 5: 1,000 tokens/s, MFU not shown")
    smoke = "x\nSMOKE: report ok in 80s; final ppl c4 240.0\n"
    assert gpu_check.summarize_smoke(smoke) == "report ok in 80s; final ppl c4 240.0"
    assert gpu_check.summarize_resume("x\nRESUME: equal; killed at step 30\n") == "equal; killed at step 30"
    assert gpu_check.summarize_mfu("crashed") == "no MFU line"


def test_compare_losses_needs_common_steps_within_tolerance():
    reference = {s: 9.0 - 0.01 * s for s in range(50)}
    ok, message = gpu_check.compare_losses(reference, {s: reference[s] for s in range(20, 50)})
    assert ok and "30/30 bit-equal" in message and "steps 20-49" in message
    drifted = {s: reference[s] + (0.05 if s == 33 else 0.0) for s in range(20, 50)}
    assert not gpu_check.compare_losses(reference, drifted)[0]
    assert gpu_check.compare_losses(reference, {99: 1.0}) == (False, "no common logged steps between the runs")


def test_caps_in_the_docstring_are_the_parts_caps_and_mfu_parts_compare_compile():
    stated = dict(re.findall(r"^    (\S+)\s+\((\d+)\)", gpu_check.__doc__, flags=re.M))
    parts = gpu_check.parts(Path("logs"))
    assert {p.name: str(p.cap_s) for p in parts} == stated
    assert int(re.search(r"add up to (\d+) s", gpu_check.__doc__).group(1)) == sum(p.cap_s for p in parts)
    by_name = {p.name: p.command for p in parts}
    for size in ("1.6b", "400m"):
        assert "--no-compile" in by_name[f"mfu-{size}"] and "--compile" in by_name[f"mfu-{size}-compile"]
    assert "compiled" in " ".join(by_name["sampler-1.6b"]) and "smoke" in by_name["replicate-smoke"]


def test_fit_part_is_nca_fit_of_1_6b_with_fsdp_and_writes_no_checkpoint():
    command = gpu_check.fit_mfu_command(Path("runs"))
    assert command[1:4] == ["-m", "nca", "fit"] and "configs/model/1.6b.yaml" in command
    assert "configs/strategy/fsdp.yaml" in command and "--model.compile" not in command  # auto: on
    assert command[command.index("--checkpoint.save_top_k") + 1] == "0"
    assert command[command.index("--checkpoint.save_last") + 1] == "false"
    assert "--trainer.enable_progress_bar" not in command  # the progress line carries the MFU


def test_smoke_refuses_an_existing_folder(tmp_path, capsys):
    assert gpu_check.main(["smoke", "--out", str(tmp_path)]) == 2
    assert "SMOKE: refused" in capsys.readouterr().out


def test_fit_command_is_the_160m_fsdp_run_with_benchmarks_importable():
    command = gpu_check.fit_command(Path("runs"), "resumed", "--ckpt_path", "last")
    assert str(ROOT / "benchmarks") in gpu_check.subprocess_env()["PYTHONPATH"].split(os.pathsep)
    assert "configs/model/160m.yaml" in command and "configs/strategy/fsdp.yaml" in command
    assert command[-2:] == ["--ckpt_path", "last"]

