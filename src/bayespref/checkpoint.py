"""Training checkpoints that survive a crash at any moment, stored without pickle.

Layout of ``<run>/checkpoint/``::

    step-00000120/           one complete training state
        model/               PreferenceModel.save(): weights (safetensors), configs, tokenizer
        optimizer.safetensors + optimizer.json
        rng.safetensors      torch RNG state
        trainer_state.json   step, epoch, best metric, EMA state, Python/NumPy RNG state
        manifest.json        sha256 of every file above; written last
    best/                    the model with the best validation metric so far

A checkpoint is written into a hidden temporary folder, every file flushed to disk, then the
folder renamed into place: a reader sees either the whole checkpoint or none of it. A folder
without a valid manifest, or with a file that cannot be read, is skipped by
:func:`latest_checkpoint`; only folders named ``step-<digits>`` are step checkpoints (a copy such
as ``step-00000006.bak`` is ignored).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STEP_PREFIX = "step-"
STEP_DIR = re.compile(rf"{STEP_PREFIX}([0-9]+)")  # a step checkpoint's folder name, in full


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or does not match its manifest."""


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(folder: Path) -> None:
    files = {
        str(p.relative_to(folder)): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def verify_manifest(folder: Path) -> None:
    """Raise :class:`CheckpointError` unless every file matches the manifest and can be read.

    The checksums catch a truncated or altered file; the read check (every safetensors header
    and JSON file parses) catches a wrong file whose checksums were recomputed, such as a file
    of another format copied over ``model.safetensors``. Either way the error names the file.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{folder}: incomplete checkpoint (no {MANIFEST})")
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{manifest}: unreadable manifest ({err})") from err
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{folder}: {name} is corrupted (checksum mismatch)")
        _check_readable(path, f"{folder}: {name}")


def _check_readable(path: Path, where: str) -> None:
    """Parse a safetensors header or a JSON file; a failure is a one-line CheckpointError."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except SafetensorError as err:
        raise CheckpointError(f"{where} is not a readable safetensors file ({err})") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{where} is not valid JSON ({err})") from err


def atomic_write_dir(final: Path, write_fn) -> Path:
    """Call ``write_fn(tmp_folder)``, add a manifest, fsync, and rename to ``final``.

    An existing ``final`` is replaced only after the new folder is complete. If writing fails
    (for example ``OSError`` on a full disk), the temporary folder is removed, whatever was at
    ``final`` is untouched, and the error propagates.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        write_fn(tmp)
        write_manifest(tmp)
        _fsync_tree(tmp)
        if final.exists():
            old = parent / f".old-{final.name}-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- optimizer state without pickle --------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in state["param_groups"]
    ]
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(
        json.dumps({"param_groups": groups, "scalars": scalars}), encoding="utf-8"
    )


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- finding checkpoints ----------------------------------------------------------------------


def list_checkpoints(root: Path) -> list[Path]:
    """Step checkpoints under ``root``, oldest first (complete or not).

    Only folders named ``step-<digits>`` count: anything else there (``best``, a hidden
    temporary folder, a user's copy such as ``step-00000006.bak``) is not a step checkpoint,
    so it is never resumed from nor pruned (logged at debug level).
    """
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_DIR.fullmatch(path.name)
        if path.is_dir() and match is not None:
            found.append((int(match.group(1)), path))
        elif path.name != "best" and not path.name.startswith("."):
            logger.debug("%s: not a step checkpoint (step-<digits>), ignored", path)
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: Path, verify: bool = True) -> Path | None:
    """The newest step checkpoint whose manifest verifies; corrupt ones are skipped (logged)."""
    for path in reversed(list_checkpoints(Path(root))):
        if not verify:
            if (path / MANIFEST).is_file():
                return path
            continue
        try:
            verify_manifest(path)
        except CheckpointError as err:
            logger.warning("skipping checkpoint: %s", err)
            continue
        return path
    return None


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints, and stale temporary folders."""
    steps = list_checkpoints(root)
    for path in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(".tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


# -- training state as JSON (no pickle) ---------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """Tensors, tuples and nested containers as JSON-able values (:func:`from_jsonable`)."""
    if torch.is_tensor(value):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def from_jsonable(value: Any) -> Any:
    """The inverse of :func:`to_jsonable` (tuples come back as lists)."""
    if isinstance(value, dict) and "__tensor__" in value:
        return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def rng_state() -> dict:
    """Python's and NumPy's random states, JSON-able (torch's is saved as safetensors)."""
    # legacy=True is numpy's default: ("MT19937", keys (624,) uint32, pos, has_gauss, gauss)
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # a dict only for legacy=False or a non-MT19937 generator
    return {
        "python_rng": to_jsonable(random.getstate()),
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(payload: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_tupled(payload["python_rng"]))
    np_state = payload["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
