"""The pretrained model: a small bias-free causal transformer trained here with backprop, cached
under ``data/`` by its config, or a Hugging Face causal LM where ``transformers`` can load one.

``TinyGPT`` is a byte-level GPT-style decoder with no bias anywhere (Linear and LayerNorm), learned
positions, pre-LayerNorm blocks (attention, then a GELU MLP) and an output head tied to the token
embedding. ``load_or_pretrain`` trains it on a corpus (``fpwb.lm.corpus``) or loads the cached
checkpoint; ``LanguageModel`` is what the experiment works on: the module (token ids -> logits),
its tokenizer, its context length and the names of its Linear layers by role and block.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import corpus

#: Roles of the Linear layers in a block: the attention's input (q, k, v) and output projections,
#: the MLP's up and down projections.
ROLES = ("attn_in", "attn_out", "mlp_in", "mlp_out")
#: Bumped when the checkpoint layout changes (old cache files then get a new key).
CHECKPOINT_FORMAT = 1


class CheckpointCorruptError(ValueError):
    """A cached checkpoint file that cannot be read or does not hold what its name promises."""


@dataclass(frozen=True)
class TinyConfig:
    """The architecture and the pretraining run; together they name the cached checkpoint."""
    vocab_size: int = 256
    context: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    corpus: str = "code"
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "context", "d_model", "n_layers", "n_heads", "mlp_ratio", "steps",
                     "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TinyConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.corpus not in corpus.CORPORA:
            raise ValueError(f"corpus must be one of {corpus.CORPORA}, got {self.corpus!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")


class Attention(nn.Module):
    """Causal multi-head self-attention, no bias."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C / H)
        return self.proj(out.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=False)
        self.proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, hidden: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, bias=False)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model, bias=False)
        self.mlp = MLP(d_model, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A bias-free causal transformer over bytes. Input (B, T) token ids, T <= context; output
    (B, T, vocab_size) logits."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.context, d)
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.mlp_ratio * d)
                                    for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # GPT-2's initialisation; residual output projections scaled down by depth
                std = 0.02 / math.sqrt(2 * config.n_layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[1] > self.config.context:
            raise ValueError(f"TinyGPT expects token ids (batch, T <= {self.config.context}), "
                             f"got {tuple(ids.shape)}")
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(positions)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tok_emb.weight.T  # (B, T, V)

    def extra_repr(self) -> str:
        c = self.config
        return (f"context={c.context}, d_model={c.d_model}, n_layers={c.n_layers}, "
                f"n_heads={c.n_heads}, parameters={sum(p.numel() for p in self.parameters()):,}")


@dataclass
class LanguageModel:
    """A causal LM as the experiment sees it.

    model: module mapping token ids (B, T) to logits (B, T, V); encode: text -> ids (T,) long;
    decode: ids -> text; context: the longest input used; layers: role (``ROLES``) -> the module
    names (inside ``model``) of that role's Linear in each block, in block order.
    """
    name: str
    model: nn.Module
    encode: Callable[[str], torch.Tensor]
    decode: Callable[[torch.Tensor], str]
    context: int
    layers: dict = field(default_factory=dict)

    def layer_names(self, roles=("mlp_in",), blocks=None) -> list[str]:
        """Names of the Linear layers of the given roles in the given blocks (indices, negative
        from the end; None: every block), block by block."""
        roles = [roles] if isinstance(roles, str) else list(roles)
        unknown = [r for r in roles if r not in self.layers]
        if unknown or not roles:
            raise ValueError(f"roles must be a non-empty list of {sorted(self.layers)}, got {roles!r}")
        n = len(self.layers[roles[0]])
        chosen = range(n) if blocks is None else list(blocks)
        for b in chosen:
            if isinstance(b, bool) or not isinstance(b, int) or not -n <= b < n:
                raise ValueError(f"blocks must be indices into {n} blocks, got {blocks!r}")
        picked = sorted({b % n for b in chosen})
        return [self.layers[r][b] for b in picked for r in roles]


def _encode_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def _decode_bytes(ids: torch.Tensor) -> str:
    return bytes(int(i) for i in ids.tolist()).decode("utf-8", errors="replace")


def tiny_language_model(model: TinyGPT) -> LanguageModel:
    """A TinyGPT with its byte tokenizer and Linear layer names."""
    names = {"attn_in": "attn.qkv", "attn_out": "attn.proj", "mlp_in": "mlp.fc", "mlp_out": "mlp.proj"}
    layers = {role: [f"blocks.{i}.{name}" for i in range(len(model.blocks))] for role, name in names.items()}
    return LanguageModel(name="tiny", model=model, encode=_encode_bytes, decode=_decode_bytes,
                         context=model.config.context, layers=layers)


def pretrain(config: TinyConfig, *, device="cpu", progress: bool = True) -> tuple[TinyGPT, list]:
    """Train a TinyGPT on the config's corpus with AdamW (warm-up, cosine decay, gradient clipping
    at 1). Returns the model (eval mode) and the training loss of every step."""
    torch.manual_seed(config.seed)
    model = TinyGPT(config).to(device)
    ids = corpus.corpus_ids(config.corpus, "train")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, config.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / config.steps))))
    losses = []
    batches = corpus.random_windows(ids, config.context, config.batch_size, config.steps, seed=config.seed)
    model.train()
    for batch in tqdm(batches, total=config.steps, desc="pretrain", disable=not progress):
        batch = batch.to(device)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


def cache_path(config: TinyConfig, cache_dir="data/lm") -> Path:
    """Where the checkpoint of ``config`` is cached: named by a hash of the config, the corpus's
    text and the checkpoint format, so a changed corpus or config never reuses an old file."""
    key = json.dumps({"config": asdict(config), "corpus": corpus.digest(config.corpus),
                      "format": CHECKPOINT_FORMAT}, sort_keys=True)
    return Path(cache_dir) / f"tiny-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _load_checkpoint(path: Path, config: TinyConfig, device) -> tuple[TinyGPT, dict]:
    hint = "delete it to pretrain again"
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises several kinds for a damaged file
        raise CheckpointCorruptError(f"cached checkpoint {path} cannot be read ({type(error).__name__}: "
                                     f"{error}); {hint}") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT \
            or saved.get("config") != asdict(config) or "state_dict" not in saved:
        raise CheckpointCorruptError(f"cached checkpoint {path} does not hold a format-"
                                     f"{CHECKPOINT_FORMAT} checkpoint of {config}; {hint}")
    model = TinyGPT(config).to(device)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise CheckpointCorruptError(f"cached checkpoint {path} has weights that do not fit {config} "
                                     f"({error}); {hint}") from None
    return model.eval(), saved


def load_or_pretrain(config: TinyConfig, *, cache_dir="data/lm", device="cpu",
                     progress: bool = True) -> tuple[LanguageModel, dict]:
    """The pretrained tiny model of ``config``: loaded from the cache when its file is there,
    else pretrained and cached (written to a temporary file, then renamed, so an interrupted run
    leaves no half-written checkpoint). A cache file that cannot be read raises
    ``CheckpointCorruptError`` naming it.

    Returns (LanguageModel, info): info holds path, cached (loaded, not trained), losses (of
    pretraining) and pretrain_seconds.
    """
    path = cache_path(config, cache_dir)
    if path.exists():
        model, saved = _load_checkpoint(path, config, device)
        info = {"path": str(path), "cached": True, "losses": saved["losses"],
                "pretrain_seconds": saved["seconds"]}
        return tiny_language_model(model), info
    start = time.perf_counter()
    model, losses = pretrain(config, device=device, progress=progress)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(config),
                "state_dict": model.state_dict(), "losses": losses, "seconds": seconds}, partial)
    os.replace(partial, path)
    return tiny_language_model(model), {"path": str(path), "cached": False, "losses": losses,
                                        "pretrain_seconds": seconds}


class _HFLogits(nn.Module):
    """A Hugging Face causal LM as a module from token ids to logits."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, ids):
        return self.lm(input_ids=ids).logits


def load_hf(name: str = "distilgpt2", *, context: int = 128, device="cpu") -> LanguageModel:
    """A GPT-2-family causal LM from Hugging Face (``transformers``, weights from its cache or the
    hub). Its Linear layers are ``transformers``' Conv1D (weight stored (in, out), with bias);
    ``fpwb.lm.dropin`` reads both layouts. Raises ValueError when transformers is not installed,
    the model cannot be loaded (no network and no cached copy) or it is not GPT-2-shaped."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ValueError("the Hugging Face path needs transformers: pip install transformers "
                         "(or use the tiny model, model='tiny')") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        hf = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
    except OSError as error:
        raise ValueError(f"cannot load {name!r} from Hugging Face (no network and no cached copy?): "
                         f"{error}") from None
    blocks = getattr(getattr(hf, "transformer", None), "h", None)
    if blocks is None:
        raise ValueError(f"{name!r} is not a GPT-2-family model (no transformer.h blocks)")
    names = {"attn_in": "attn.c_attn", "attn_out": "attn.c_proj", "mlp_in": "mlp.c_fc",
             "mlp_out": "mlp.c_proj"}
    layers = {role: [f"lm.transformer.h.{i}.{n}" for i in range(len(blocks))] for role, n in names.items()}
    context = min(context, hf.config.n_positions)

    def encode(text):
        return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)

    def decode(ids):
        return tokenizer.decode(ids.tolist())

    return LanguageModel(name=name, model=_HFLogits(hf), encode=encode, decode=decode,
                         context=context, layers=layers)
