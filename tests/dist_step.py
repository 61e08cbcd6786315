"""One training step's per-example losses and gradients, for the data-parallel test.

Run alone (one process, global batch B) or under ``accelerate launch --num_processes 2``
(each process B/2); rank 0 writes the gathered per-example losses and the (DDP-averaged)
gradients to a safetensors file.
"""

import argparse

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from bayespref.config import LossConfig, ModelConfig
from bayespref.data import load_dataset
from bayespref.evaluation import encode_split, model_inputs
from bayespref.losses import MarginalEMA
from bayespref.model import PreferenceModel
from bayespref.train import global_batch_gather, make_objective
from bayespref.trainer_utils import micro_batch_indices

parser = argparse.ArgumentParser()
parser.add_argument("--encoder", required=True)
parser.add_argument("--batch-size", type=int, required=True)
parser.add_argument("--normaliser", default="batch")
parser.add_argument("--output", required=True)
args = parser.parse_args()

accelerator = Accelerator(cpu=True)
torch.manual_seed(0)
dataset = load_dataset("synthetic", n=48, seed=1)
model = PreferenceModel.build(ModelConfig(encoder=args.encoder, dropout=0.0), dataset.label_space)
split = encode_split(model, dataset, alpha=0.1)
loss_config = LossConfig(name="forward-kl", normaliser=args.normaliser)
ema = MarginalEMA(3) if args.normaliser == "ema" else None
objective = make_objective(loss_config, ema, training=True, gather=global_batch_gather(accelerator))
model = accelerator.prepare(model)
world, rank = accelerator.num_processes, accelerator.process_index
indices = micro_batch_indices(0, len(split), args.batch_size, world, rank, seed=0)
batch = split.batch(indices)
logits = model(**model_inputs(batch, accelerator.device))
losses = objective(logits, batch["prior"], batch["labels"])  # (B_local,)
accelerator.backward(losses.mean())
all_losses = accelerator.gather(losses.detach())
if accelerator.is_main_process:
    out = {"losses": all_losses.contiguous()}
    if ema is not None:
        out["ema_m"] = ema.state_dict()["m"]
    for name, param in accelerator.unwrap_model(model).named_parameters():
        if param.grad is not None:
            out[f"grad.{name}"] = param.grad.detach().contiguous()
    save_file(out, args.output)
