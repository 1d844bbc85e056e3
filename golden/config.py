"""Model configuration of a MatMul-free LM checkpoint (``hgrn_bit``).

Reads ``config.json`` of a Hugging Face model directory, rejects the options
that the released models do not use, and derives the shape that every other
part of the project works from.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConfigError", "ModelConfig", "load_config", "intermediate_size_for"]


class ConfigError(ValueError):
    """A model file or field does not match what the released models use."""


def intermediate_size_for(hidden_size, hidden_ratio):
    """Return the GLU width that ``hgrn_bit`` derives when the config omits it."""
    return 256 * math.ceil(int(hidden_size * hidden_ratio * 2 / 3) / 256)


@dataclass(frozen=True)
class ModelConfig:
    """Shape and options of one model.

    Members
    -------
    vocab_size, hidden_size, intermediate_size, num_layers : int
        V, H, I and L.
    use_lower_bound : bool
        Whether the forget gates carry the learned per-layer lower bound.
    rms_norm_eps : float
        The RMSNorm epsilon of the float reference.
    bos_token_id, eos_token_id : int or None
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    use_lower_bound: bool = True
    rms_norm_eps: float = 1e-6
    bos_token_id: "int | None" = None
    eos_token_id: "int | None" = None

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"`{name}` must be a positive integer, not {value!r}")

    @property
    def projections(self):
        """Return ``(name, rows, cols)`` of every BitLinear in the order of one decoding step."""
        H, I = self.hidden_size, self.intermediate_size
        result = []
        for layer in range(self.num_layers):
            prefix = f"model.layers.{layer}"
            result += [
                (f"{prefix}.attn.f_proj", H, H),
                (f"{prefix}.attn.i_proj", H, H),
                (f"{prefix}.attn.g_proj", H, H),
                (f"{prefix}.attn.o_proj", H, H),
                (f"{prefix}.mlp.gate_proj", 2 * I, H),
                (f"{prefix}.mlp.down_proj", H, I),
            ]
        result.append(("lm_head", self.vocab_size, H))
        return result

    @property
    def trit_count(self):
        """Number of ternary weights in the model, the LM head included."""
        return sum(rows * cols for _, rows, cols in self.projections)

    @property
    def max_fan_in(self):
        return max(self.hidden_size, self.intermediate_size)

    def to_json(self):
        """Return a ``config.json`` dictionary for this shape."""
        return {
            "model_type": "hgrn_bit",
            "architectures": ["HGRNBitForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_heads": 1,
            "expand_ratio": 1,
            "hidden_ratio": 4,
            "intermediate_size": self.intermediate_size,
            "use_lower_bound": self.use_lower_bound,
            "use_short_conv": False,
            "attn_mode": "fused_recurrent",
            "rms_norm_eps": self.rms_norm_eps,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_word_embeddings": False,
        }


def _field(raw, name, kind, path, default=None, required=True):
    if name not in raw or raw[name] is None:
        if required and default is None:
            raise ConfigError(f"{path}: missing field `{name}`")
        return default
    value = raw[name]
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{path}: field `{name}` must be an integer, not {value!r}")
    if kind is float and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise ConfigError(f"{path}: field `{name}` must be a number, not {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{path}: field `{name}` must be true or false, not {value!r}")
    return value


def parse_config(raw, path="config.json"):
    """Build a :class:`ModelConfig` from a parsed ``config.json`` dictionary."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    model_type = raw.get("model_type")
    if model_type != "hgrn_bit":
        raise ConfigError(f"{path}: field `model_type` must be 'hgrn_bit', not {model_type!r}")

    if _field(raw, "use_short_conv", bool, path, default=False, required=False):
        raise ConfigError(f"{path}: field `use_short_conv` is true; the released models "
                          f"use no short convolution and this model does not support one")
    expand_ratio = _field(raw, "expand_ratio", int, path, default=1, required=False)
    if expand_ratio != 1:
        raise ConfigError(f"{path}: field `expand_ratio` must be 1, not {expand_ratio}")
    attn_mode = raw.get("attn_mode", "fused_recurrent")
    if attn_mode not in ("fused_recurrent", "chunk"):
        # `chunk` is the parallel training form of the same recurrence.
        raise ConfigError(f"{path}: field `attn_mode` must be 'fused_recurrent', not {attn_mode!r}")
    if _field(raw, "tie_word_embeddings", bool, path, default=False, required=False):
        raise ConfigError(f"{path}: field `tie_word_embeddings` is true; the released models "
                          f"have an LM head separate from the embedding")
    num_heads = _field(raw, "num_heads", int, path, default=1, required=False)
    if num_heads < 1:
        raise ConfigError(f"{path}: field `num_heads` must be a positive integer, not {num_heads}")

    hidden_size = _field(raw, "hidden_size", int, path)
    intermediate_size = _field(raw, "intermediate_size", int, path, required=False)
    if intermediate_size is None:
        hidden_ratio = _field(raw, "hidden_ratio", float, path, default=4, required=False)
        intermediate_size = intermediate_size_for(hidden_size, hidden_ratio)

    eps = _field(raw, "rms_norm_eps", float, path, default=1e-6, required=False)
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"{path}: field `rms_norm_eps` must be a positive number, not {eps!r}")

    # _field's errors already name the path, so only ModelConfig's own checks run
    # inside the try block that adds it.
    vocab_size = _field(raw, "vocab_size", int, path)
    num_layers = _field(raw, "num_hidden_layers", int, path)
    use_lower_bound = _field(raw, "use_lower_bound", bool, path, default=True, required=False)
    bos_token_id = _field(raw, "bos_token_id", int, path, required=False)
    eos_token_id = _field(raw, "eos_token_id", int, path, required=False)
    try:
        return ModelConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_layers=num_layers,
            use_lower_bound=use_lower_bound,
            rms_norm_eps=float(eps),
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
        )
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def load_config(model_dir):
    """Read and check ``config.json`` in the Hugging Face directory ``model_dir``."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; a model directory needs config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: invalid JSON: {error}") from None
    return parse_config(raw, str(path))
