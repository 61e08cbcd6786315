"""Shared pieces of the benchmarks: machine description, timing, peak memory, output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def machine() -> str:
    """One line: CPU or GPU model, core count, torch version."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    device = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return (
        f"{device}; {os.cpu_count()} cores; torch {torch.__version__}; "
        f"{torch.get_num_threads()} threads"
    )


def device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextmanager
def timed(dev: torch.device, out: dict, key: str):
    """Wall seconds of the block into ``out[key]`` (the GPU is synchronised on both sides)."""
    synchronize(dev)
    start = time.perf_counter()
    yield
    synchronize(dev)
    out[key] = time.perf_counter() - start


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_mib(dev: torch.device) -> float:
    """Peak GPU memory since the last reset, or the process's peak RSS on a CPU (MiB)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, figures: dict, out_json: str | None = None) -> None:
    """Print the benchmark's figures (and write them as JSON when asked)."""
    figures = {
        "benchmark": name,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        **figures,
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(figures, indent=2))
    sys.stdout.flush()


# Dense peak FLOP/s by device-name fragment (bf16 tensor cores; float32 without sparsity).
_PEAKS = {"H100": (989e12, 67e12), "H200": (989e12, 67e12), "A100": (312e12, 19.5e12)}


def peak_flops(dev: torch.device, bf16: bool) -> float | None:
    """The accelerator's dense peak FLOP/s for the precision, or None when unknown (CPUs)."""
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    for fragment, (peak_bf16, peak_fp32) in _PEAKS.items():
        if fragment in name:
            return peak_bf16 if bf16 else peak_fp32
    return None
