"""Pooled encoder features for frozen-encoder training, computed once and cached on disk.

With ``model.freeze_encoder=true`` only the head trains, so each item's pooled encoder output
is a constant: computing it once turns an epoch from thousands of encoder passes into a few
matrix products. This is what makes a loss study with many cells and seeds affordable on a
CPU. The cache is keyed by the encoder (its name, config, pooling and a checksum of some of its
weights) and, per item, by the exact token ids the model would see, so a different tokenizer,
``max_length`` or text can never hit a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from .adapters import base_model
from .model import PreferenceModel, collate_encoded
from .reward_model import RewardModel

logger = logging.getLogger(__name__)

KEY_BYTES = 20  # sha1


def encoder_fingerprint(model: PreferenceModel | RewardModel) -> str:
    """A short hash that changes when the encoder, its weights or the pooling change."""
    digest = hashlib.sha1()
    digest.update(model.config.encoder.encode())
    digest.update(model.config.pooling.encode())
    digest.update(base_model(model.encoder).config.to_json_string().encode())
    params = list(model.encoder.parameters())
    for param in (params[0], params[len(params) // 2], params[-1]):
        digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def item_key(item: dict[str, list[int]]) -> bytes:
    """The hash of one encoded item (token ids, masks): what the encoder sees."""
    payload = json.dumps({k: item[k] for k in sorted(item)}, separators=(",", ":"))
    return hashlib.sha1(payload.encode()).digest()


class FeatureCache:
    """Append-only store ``folder/<encoder fingerprint>/shard-*.safetensors``.

    Each shard holds ``keys`` (N, 20) uint8 and ``features`` (N, H) float32, written to a
    temporary name and renamed, so a crash never leaves a half shard behind.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: str):
        self.folder = Path(folder) / fingerprint
        self._table: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._table is None:
            self._table = {}
            for shard in sorted(self.folder.glob("shard-*.safetensors")):
                data = load_file(str(shard))
                for key, row in zip(data["keys"], data["features"]):
                    self._table[key.tobytes()] = row
        return self._table

    def get(self, keys: list[bytes]) -> list[np.ndarray | None]:
        table = self._load()
        return [table.get(k) for k in keys]

    def put(self, keys: list[bytes], features: np.ndarray) -> None:
        if not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file(
            {"keys": key_array, "features": np.ascontiguousarray(features, dtype=np.float32)},
            str(tmp),
        )
        tmp.replace(self.folder / name)
        table = self._load()
        for key, row in zip(keys, features):
            table[key] = row


@torch.no_grad()
def compute_features(
    model: PreferenceModel | RewardModel,
    items: list[dict[str, list[int]]],
    pad_token_id: int,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Pooled encoder features (N, H) float32 of encoded items, in item order.

    Items missing from the cache run through the encoder in eval mode, longest first in
    batches of similar length (inference only: the batch composition cannot bias anything
    here, and sorting cuts the padding), then go into the cache. ``progress``: a bar over the
    items encoded (minutes for a large data set on a CPU); ``None`` shows it on a terminal
    only, ``False`` (a run's ``progress=false``) never.
    """
    cache = FeatureCache(cache_dir, encoder_fingerprint(model)) if cache_dir else None
    keys = [item_key(it) for it in items]
    found: list[np.ndarray | None] = cache.get(keys) if cache is not None else [None] * len(items)
    missing = [i for i, row in enumerate(found) if row is None]
    if missing:
        logger.info("encoding %d of %d items with the frozen encoder", len(missing), len(items))
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        order = sorted(missing, key=lambda i: -len(items[i]["input_ids"]))
        computed: dict[int, np.ndarray] = {}
        bar = tqdm(
            total=len(order),
            desc="encoder features",
            unit="item",
            disable=None if progress is None else not progress,
            leave=False,
        )
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = collate_encoded([items[i] for i in chunk], pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                pooled = model.pooled_features(**batch).float().cpu().numpy()  # (b, H)
                for i, row in zip(chunk, pooled):
                    computed[i] = row
                bar.update(len(chunk))
        finally:
            bar.close()
            model.train(was_training)
        if cache is not None:
            cache.put([keys[i] for i in missing], np.stack([computed[i] for i in missing]))
        for i in missing:
            found[i] = computed[i]
    if not items:
        return np.zeros((0, 0), dtype=np.float32)
    rows = [row for row in found if row is not None]  # every item is cached or computed by now
    return np.stack(rows).astype(np.float32)
