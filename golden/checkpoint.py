"""Checkpoint reading and writing: Hugging Face safetensors, bf16/fp16/fp32.

The reader parses the safetensors container itself so that bf16 tensors load
into NumPy (which has no bf16 type) without PyTorch. Every tensor that
:func:`expected_tensors` lists is checked for presence, shape and finiteness,
and a tensor that it does not list is rejected.
"""

import json
import struct
from pathlib import Path

import numpy as np

from .config import ModelConfig, load_config

__all__ = ["CheckpointError", "expected_tensors", "load_checkpoint", "save_checkpoint", "read_safetensors"]


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, malformed or out of range."""


_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def expected_tensors(config: ModelConfig):
    """Return ``{name: shape}`` of every tensor a checkpoint of ``config`` must hold."""
    H, I, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_layers
    shapes = {"model.embeddings.weight": (V, H)}
    if config.use_lower_bound:
        shapes["model.lower_bounds"] = (L, H)
    for layer in range(L):
        prefix = f"model.layers.{layer}"
        shapes[f"{prefix}.attn_norm.weight"] = (H,)
        for proj in ("i", "f", "g", "o"):
            shapes[f"{prefix}.attn.{proj}_proj.weight"] = (H, H)
            shapes[f"{prefix}.attn.{proj}_proj.norm.weight"] = (H,)
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


def read_safetensors(path):
    """Read every tensor of one ``.safetensors`` file as float32 arrays."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error.strerror}") from None
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated: {len(data)} bytes, a safetensors file "
                              f"starts with an 8-byte header length")
    (header_len,) = struct.unpack_from("<Q", data, 0)
    if header_len > len(data) - 8:
        raise CheckpointError(f"{path}: truncated: header of {header_len} bytes, "
                              f"file holds {len(data) - 8} after the length field")
    try:
        header = json.loads(data[8:8 + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: invalid safetensors header: {error}") from None
    payload = memoryview(data)[8 + header_len:]

    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype_name = info.get("dtype")
        if dtype_name not in _DTYPES:
            raise CheckpointError(f"{path}: tensor `{name}` has dtype {dtype_name}; "
                                  f"expected one of BF16, F16, F32")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        dtype = _DTYPES[dtype_name]
        if not (0 <= start <= end <= len(payload)) or end - start != dtype.itemsize * int(np.prod(shape)):
            raise CheckpointError(f"{path}: tensor `{name}` has data offsets {start}..{end} that do not "
                                  f"match its shape {shape} and dtype {dtype_name} in a payload of "
                                  f"{len(payload)} bytes")
        raw = np.frombuffer(payload[start:end], dtype=dtype).reshape(shape)
        if dtype_name == "BF16":
            array = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            array = raw.astype(np.float32)
        tensors[name] = array
    return tensors


def _read_all(model_dir):
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single), single
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index}: invalid shard index: {error}") from None
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            shard_tensors = read_safetensors(model_dir / shard)
            for name, array in shard_tensors.items():
                if weight_map.get(name) == shard:
                    tensors[name] = array
        missing = sorted(name for name in weight_map if name not in tensors)
        if missing:
            raise CheckpointError(f"{index}: tensor `{missing[0]}` is listed in the index "
                                  f"but missing from shard {weight_map[missing[0]]}")
        return tensors, index
    raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json found")


def load_checkpoint(model_dir):
    """Load and check a Hugging Face model directory.

    Returns ``(config, tensors)`` with every tensor as a float32 array.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir}: model directory not found")
    config = load_config(model_dir)
    tensors, source = _read_all(model_dir)

    checked = {}
    for name, shape in expected_tensors(config).items():
        if name not in tensors:
            raise CheckpointError(f"{source}: missing tensor `{name}` (expected shape {shape})")
        array = tensors[name]
        if array.shape != shape:
            raise CheckpointError(f"{source}: tensor `{name}` has shape {array.shape}, expected {shape}")
        if not np.all(np.isfinite(array)):
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise CheckpointError(f"{source}: tensor `{name}` has {bad} non-finite values (NaN or inf)")
        checked[name] = array
    unexpected = sorted(set(tensors) - set(checked))
    if unexpected:
        # Usually config.json describes another shape, such as fewer layers, than the weights have.
        raise CheckpointError(f"{source}: tensor `{unexpected[0]}` is not part of the model that "
                              f"{model_dir / 'config.json'} describes ({len(unexpected)} such tensors); "
                              f"check that config.json belongs to these weights")
    return config, checked


def save_checkpoint(model_dir, config: ModelConfig, tensors, dtype="F32"):
    """Write ``config.json`` and ``model.safetensors`` (dtype ``F32``, ``F16`` or ``BF16``)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config.to_json(), indent=2) + "\n")

    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "BF16":
            bits = array.view(np.uint32)
            # Round to nearest even on the 16 bits that bf16 drops.
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            raw = rounded.astype("<u2").tobytes()
        elif dtype == "F16":
            raw = array.astype("<f2").tobytes()
        elif dtype == "F32":
            raw = array.astype("<f4").tobytes()
        else:
            raise ValueError(f"dtype must be 'F32', 'F16' or 'BF16', not {dtype!r}")
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(model_dir / "model.safetensors", "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for raw in chunks:
            file.write(raw)

