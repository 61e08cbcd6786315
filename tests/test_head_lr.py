"""optim.head_lr: the head's own peak learning rate beside a fine-tuned encoder's."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bayespref.config import ConfigError, load_config
from bayespref.data.synthetic import SYNTHETIC_LABEL_SPACE
from bayespref.model import PreferenceModel
from bayespref.train import train
from bayespref.trainer_utils import param_groups, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(3, 3)  # weight (decay) + bias (no decay)
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))


def test_param_groups_split_the_head_only_when_asked():
    toy = Toy()
    old = param_groups(toy, 0.01)
    assert [g["weight_decay"] for g in old] == [0.01, 0.0] and "lr_scale" not in old[0]
    assert sum(len(g["params"]) for g in old) == 6
    groups = param_groups(toy, 0.01, head_lr_scale=20.0)
    summary = [(g["weight_decay"], g["lr_scale"], len(g["params"])) for g in groups]
    # encoder: weight | bias; head: linear weight | norm weight, norm bias, linear bias
    assert summary == [(0.01, 1.0, 1), (0.0, 1.0, 1), (0.01, 20.0, 1), (0.0, 20.0, 3)]
    toy.encoder.requires_grad_(False)
    frozen = param_groups(toy, 0.01, head_lr_scale=20.0)
    assert [g["lr_scale"] for g in frozen] == [20.0, 20.0]  # empty groups are left out


def test_head_lr_must_be_positive():
    with pytest.raises(ConfigError, match="optim.head_lr must be a finite number > 0 or null"):
        load_config(None, ["optim.head_lr=0"])


def test_the_head_moves_at_its_own_rate(tmp_path, tiny_encoder_dir):
    """One run with a tiny encoder lr and a large head lr: the head's weights move far more
    than the encoder's (AdamW moves a weight about lr per step), and far more than with one lr."""

    def largest_change(head_lr: str) -> tuple[float, float]:
        config = load_config(
            None,
            [
                f"output_dir={tmp_path}",
                f"name=run-{head_lr}",
                f"model.encoder={tiny_encoder_dir}",
                "model.max_length=32",
                "loss.name=soft",
                "data.train={n: 32, seed: 1}",
                "data.valid={n: 8, seed: 2}",
                "optim.batch_size=8",
                "optim.max_steps=4",
                "optim.warmup_ratio=0",
                "optim.lr=1e-6",
                f"optim.head_lr={head_lr}",
                "progress=false",
            ],
        )
        seed_everything(config.seed)  # as train() does before it builds the same model
        start = PreferenceModel.build(config.model, SYNTHETIC_LABEL_SPACE, config.peft).state_dict()
        train(config)
        end = load_file(
            str(config.run_dir / "checkpoint" / "step-00000004" / "model" / "model.safetensors")
        )
        change = {"head": [], "encoder": []}
        for name, before in start.items():
            if name not in end or not before.is_floating_point():
                continue
            part = "head" if name.startswith("head.") else "encoder"
            change[part].append(float((end[name] - before).abs().max()))
        return max(change["head"]), max(change["encoder"])

    head, encoder = largest_change("1e-2")
    assert head > 100 * encoder
    same_head, _ = largest_change("null")
    assert head > 100 * same_head
