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


def _shown(value) -> str:
    """Floats with 4 significant digits, large ones (tokens/s) as whole numbers."""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def report(
    name: str, figures: dict, out_json: str | None = None, table: list[dict] | None = None
) -> None:
    """Print the benchmark's figures, then ``table`` (one row per configuration, aligned
    columns) when given, and write them all as JSON when asked (the rows under
    ``"configurations"``)."""
    figures = {
        "benchmark": name,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        **figures,
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {_shown(value)}")
    if table:
        columns = list(table[0])
        cells = [[_shown(row.get(c, "")) for c in columns] for row in table]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        print()
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for row in cells:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        payload = {**figures, "configurations": table} if table else figures
        Path(out_json).write_text(json.dumps(payload, indent=2))
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
