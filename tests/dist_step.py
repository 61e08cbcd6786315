"""One training step's per-example losses and gradients, for the data-parallel test.

Run alone (one process, global batch B) or under torchrun with 2 processes (each B/2), for
the single-head model (``--kind single``) or an annotator-aware one (``--kind annotator-heads``). The
step goes through the recipe's own ``PreferenceTask.forward_backward``: ``--grad-accum``
random micro-batches, pooled into one length-sorted forward when ``--pool``. Rank 0 writes
the gathered per-example losses (micro-batch by micro-batch) and the (DDP-averaged) gradients
to a safetensors file.
"""

import argparse

import torch
from safetensors.torch import save_file

from bayespref.annotators import AnnotatorVocabulary
from bayespref.config import load_config
from bayespref.data import load_dataset
from bayespref.evaluation import encode_split
from bayespref.losses import MarginalEMA
from bayespref.model import PreferenceModel
from bayespref.train import PreferenceTask
from bayespref.trainer_utils import make_accelerator, micro_batch_indices

parser = argparse.ArgumentParser()
parser.add_argument("--encoder", required=True)
parser.add_argument("--batch-size", type=int, required=True)
parser.add_argument("--grad-accum", type=int, default=1)
parser.add_argument("--pool", action="store_true")
parser.add_argument("--normaliser", default="batch")
parser.add_argument(
    "--kind", default="single", help="model.kind (annotator-heads: no --normaliser)"
)
parser.add_argument("--output", required=True)
args = parser.parse_args()

accelerator = make_accelerator(cpu=True)  # the recipe's own DDP settings
torch.manual_seed(0)
config = load_config(
    None,
    [
        f"model.encoder={args.encoder}",
        "model.dropout=0.0",
        f"model.kind={args.kind}",
        "model.min_annotator_labels=3",
        "loss.name=" + ("forward-kl" if args.kind == "single" else "annotator-ce"),
        f"loss.normaliser={args.normaliser}",
        f"optim.batch_size={args.batch_size}",
        f"optim.grad_accum={args.grad_accum}",
        f"optim.pool_micro_batches={args.pool}",
    ],
)
dataset = load_dataset("synthetic", n=48, seed=1)
vocabulary = None
if args.kind != "single":
    vocabulary = AnnotatorVocabulary.from_dataset(dataset, config.model.min_annotator_labels)
model = PreferenceModel.build(config.model, dataset.label_space, config.peft, vocabulary)
model.eval()  # no dropout draws
split = encode_split(model, dataset, alpha=0.1)
ema = MarginalEMA(3) if args.normaliser == "ema" else None
task = PreferenceTask(config, split, split, ema, accelerator)
recorded = []
objective = getattr(task, "train_objective", None)  # None: an annotator-aware task


def recording(logits, prior, labels):
    losses = objective(logits, prior, labels)  # (B_local,)
    recorded.append(accelerator.gather(losses.detach()))
    return losses


if args.kind == "single":  # an annotator-aware task computes its own per-item loss
    task.train_objective = recording
model = accelerator.prepare(model)
world, rank = accelerator.num_processes, accelerator.process_index
micro_batches = [
    micro_batch_indices(m, len(split), args.batch_size, world, rank, seed=0)
    for m in range(args.grad_accum)
]
task.forward_backward(model, micro_batches, accelerator.backward)
if accelerator.is_main_process:
    out = {"losses": torch.cat(recorded).contiguous()} if recorded else {}
    if ema is not None:
        out["ema_m"] = ema.state_dict()["m"]
    for name, param in accelerator.unwrap_model(model).named_parameters():
        if param.grad is not None:
            out[f"grad.{name}"] = param.grad.detach().contiguous()
    save_file(out, args.output)
