"""Checkpoint and config reading: dtypes, shards and every malformed input."""

import json
import shutil
import struct

import numpy as np
import pytest

from golden.checkpoint import CheckpointError, load_checkpoint, read_safetensors, save_checkpoint
from golden.config import ConfigError, ModelConfig, intermediate_size_for, load_config
from golden.synthetic import random_tensors

SMALL = ModelConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=2)


@pytest.fixture
def small(tmp_path):
    tensors = random_tensors(SMALL, seed=1)
    save_checkpoint(tmp_path, SMALL, tensors)
    return tmp_path, tensors


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_released_intermediate_sizes():
    assert intermediate_size_for(1024, 4) == 2816
    assert intermediate_size_for(2048, 4) == 5632
    assert intermediate_size_for(2560, 4) == 6912
    assert intermediate_size_for(128, 4) == 512


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_dtypes_load(tmp_path, dtype):
    tensors = random_tensors(SMALL, seed=1)
    save_checkpoint(tmp_path, SMALL, tensors, dtype=dtype)
    config, loaded = load_checkpoint(tmp_path)
    assert config == SMALL
    tolerance = {"F32": 0, "F16": 1e-3, "BF16": 8e-3}[dtype]
    for name, value in tensors.items():
        assert loaded[name].dtype == np.float32
        assert np.allclose(loaded[name], value, rtol=tolerance, atol=tolerance * 0.05)


def test_bf16_exact_values(tmp_path):
    tensors = random_tensors(SMALL, seed=1)
    tensors["lm_head.weight"][0, :3] = [1.0, -0.5, 3.140625]   # exactly representable in bf16
    save_checkpoint(tmp_path, SMALL, tensors, dtype="BF16")
    assert read_safetensors(tmp_path / "model.safetensors")["lm_head.weight"][0, :3].tolist() == [1.0, -0.5, 3.140625]


def test_sharded_checkpoint(small, tmp_path_factory):
    path, tensors = small
    sharded = tmp_path_factory.mktemp("sharded")
    names = sorted(tensors)
    halves = {"model-00001.safetensors": names[::2], "model-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in halves.items():
        part = tmp_path_factory.mktemp("part")
        save_checkpoint(part, SMALL, {n: tensors[n] for n in shard_names})
        shutil.copy(part / "model.safetensors", sharded / shard)
        weight_map.update({n: shard for n in shard_names})
    shutil.copy(path / "config.json", sharded / "config.json")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, loaded = load_checkpoint(sharded)
    assert all(np.array_equal(loaded[n], tensors[n]) for n in tensors)


def test_missing_tensor(tmp_path):
    tensors = random_tensors(SMALL, seed=1)
    del tensors["model.layers.1.attn.g_norm.weight"]
    save_checkpoint(tmp_path, SMALL, tensors)
    with pytest.raises(CheckpointError, match=r"model.safetensors: missing tensor "
                                              r"`model.layers.1.attn.g_norm.weight` \(expected shape \(8,\)\)"):
        load_checkpoint(tmp_path)


def test_misshapen_tensor(tmp_path):
    tensors = random_tensors(SMALL, seed=1)
    tensors["model.layers.0.mlp.gate_proj.weight"] = np.zeros((16, 8), dtype=np.float32)
    save_checkpoint(tmp_path, SMALL, tensors)
    with pytest.raises(CheckpointError, match=r"tensor `model.layers.0.mlp.gate_proj.weight` has shape "
                                              r"\(16, 8\), expected \(32, 8\)"):
        load_checkpoint(tmp_path)


def test_non_finite_tensor(tmp_path):
    tensors = random_tensors(SMALL, seed=1)
    tensors["lm_head.weight"][2, 3] = np.nan
    tensors["lm_head.weight"][4, 1] = np.inf
    save_checkpoint(tmp_path, SMALL, tensors)
    with pytest.raises(CheckpointError, match=r"tensor `lm_head.weight` has 2 non-finite values"):
        load_checkpoint(tmp_path)


def test_truncated_safetensors(small):
    path, _ = small
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor `.*` has data offsets"):
        load_checkpoint(path)


def test_unsupported_dtype(small):
    path, _ = small
    data = bytearray((path / "model.safetensors").read_bytes())
    start = data.index(b'"F32"')
    data[start:start + 5] = b'"I32"'
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="has dtype I32; expected one of BF16, F16, F32"):
        load_checkpoint(path)


@pytest.mark.parametrize("field, value, message", [
    ("use_short_conv", True, "field `use_short_conv` is true"),
    ("expand_ratio", 2, "field `expand_ratio` must be 1, not 2"),
    ("attn_mode", "fused_chunk", "field `attn_mode` must be 'fused_recurrent', not 'fused_chunk'"),
    ("model_type", "llama", "field `model_type` must be 'hgrn_bit', not 'llama'"),
    ("hidden_size", "128", "field `hidden_size` must be an integer, not '128'"),
    ("num_hidden_layers", 0, "`num_layers` must be a positive integer, not 0"),
    ("tie_word_embeddings", True, "field `tie_word_embeddings` is true"),
    ("vocab_size", -5, "`vocab_size` must be a positive integer, not -5"),
    ("intermediate_size", 2.5, "field `intermediate_size` must be an integer, not 2.5"),
    ("num_heads", 0, "field `num_heads` must be a positive integer, not 0"),
    ("rms_norm_eps", -1e-6, "field `rms_norm_eps` must be a positive number, not -1e-06"),
    ("rms_norm_eps", "1e-6", "field `rms_norm_eps` must be a number, not '1e-6'"),
    ("use_lower_bound", "yes", "field `use_lower_bound` must be true or false, not 'yes'"),
])
def test_unsupported_config(small, field, value, message):
    path, _ = small
    _edit_config(path, **{field: value})
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_field(small):
    path, _ = small
    config = json.loads((path / "config.json").read_text())
    del config["vocab_size"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="config.json: missing field `vocab_size`"):
        load_config(path)


# A value of None deletes the field.
@pytest.mark.parametrize("field, value", [
    ("vocab_size", None),
    ("vocab_size", "10"),
    ("num_hidden_layers", 0),
    ("use_lower_bound", "yes"),
    ("eos_token_id", 1.5),
])
def test_config_error_names_path_once(small, field, value):
    path, _ = small
    config = json.loads((path / "config.json").read_text())
    if value is None:
        del config[field]
    else:
        config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as error_info:
        load_config(path)
    assert str(error_info.value).startswith(f"{path / 'config.json'}: ")
    assert str(error_info.value).count("config.json") == 1


def test_malformed_config_json(small):
    path, _ = small
    (path / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="config.json: invalid JSON"):
        load_config(path)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_missing_weights_file(small):
    path, _ = small
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or model.safetensors.index.json found"):
        load_checkpoint(path)


def test_config_json_not_an_object(small):
    path, _ = small
    (path / "config.json").write_text("[128, 4]")
    with pytest.raises(ConfigError, match="config.json: expected a JSON object, found list"):
        load_config(path)


def test_missing_config_json(small):
    path, _ = small
    (path / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json: file not found; a model directory needs config.json"):
        load_checkpoint(path)


def test_extra_tensor(tmp_path):
    tensors = random_tensors(SMALL, seed=1)
    tensors["model.layers.0.attn.q_proj.weight"] = np.zeros((8, 8), dtype=np.float32)
    save_checkpoint(tmp_path, SMALL, tensors)
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor `model.layers.0.attn.q_proj.weight` is "
                                              r"not part of the model that .*config.json describes "
                                              r"\(1 such tensors\); check that config.json belongs to these weights"):
        load_checkpoint(tmp_path)


def test_config_with_fewer_layers_than_weights(tmp_path):
    # Loading only the first layer of a two-layer model would compute wrong outputs that look plausible.
    # Without lower bounds, no tensor's shape depends on the layer count.
    config = ModelConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=2, use_lower_bound=False)
    save_checkpoint(tmp_path, config, random_tensors(config, seed=1))
    _edit_config(tmp_path, num_hidden_layers=1)
    with pytest.raises(CheckpointError, match=r"tensor `model.layers.1.attn.f_proj.norm.weight` is not part of "
                                              r"the model that .*config.json describes \(15 such tensors\)"):
        load_checkpoint(tmp_path)


def test_safetensors_shorter_than_header_length(small):
    path, _ = small
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(CheckpointError, match="model.safetensors: truncated: 3 bytes, a safetensors file starts "
                                              "with an 8-byte header length"):
        load_checkpoint(path)


def test_safetensors_header_past_end(small):
    path, _ = small
    (path / "model.safetensors").write_bytes(struct.pack("<Q", 500) + b"{}")
    with pytest.raises(CheckpointError, match="model.safetensors: truncated: header of 500 bytes, file holds 2 "
                                              "after the length field"):
        load_checkpoint(path)


def test_safetensors_header_invalid_json(small):
    path, _ = small
    (path / "model.safetensors").write_bytes(struct.pack("<Q", 6) + b"{oops}")
    with pytest.raises(CheckpointError, match="model.safetensors: invalid safetensors header: Expecting property name"):
        load_checkpoint(path)


def test_invalid_shard_index(small):
    path, _ = small
    (path / "model.safetensors").unlink()
    (path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: invalid shard index: 'weight_map'"):
        load_checkpoint(path)


def test_tensor_missing_from_its_shard(small):
    path, tensors = small
    (path / "model.safetensors").rename(path / "model-00001.safetensors")
    weight_map = {name: "model-00001.safetensors" for name in tensors}
    weight_map["model.extra.weight"] = "model-00001.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match="index.json: tensor `model.extra.weight` is listed in the index "
                                              "but missing from shard model-00001.safetensors"):
        load_checkpoint(path)
