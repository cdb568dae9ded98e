"""ModelConfig: reference names, derived sizes, JSON round-trip, validation."""

import pytest

from mmfree_hls import ConfigError, ModelConfig


def test_intermediate_size_rounds_up_to_256():
    assert ModelConfig(hidden_size=1024, hidden_ratio=4).ffn_dim == 2816      # 2730 → 2816
    assert ModelConfig(hidden_size=1024, intermediate_size=1000).ffn_dim == 1000


def test_json_round_trip_keeps_unknown_reference_keys(tmp_path):
    cfg = ModelConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2)
    cfg.extra["architectures"] = ["HGRNBitForCausalLM"]
    cfg.to_json(tmp_path / "config.json")
    back = ModelConfig.from_json(tmp_path / "config.json")
    assert back == cfg and back.extra == cfg.extra


@pytest.mark.parametrize("field,value,match", [
    ("hidden_size", 0, "hidden_size"),
    ("num_hidden_layers", -2, "num_hidden_layers"),
    ("vocab_size", 3.5, "vocab_size"),
    ("model_type", "llama", "model_type"),
    ("use_short_conv", True, "use_short_conv"),
    ("rms_norm_eps", 0.0, "rms_norm_eps"),
    ("intermediate_size", -4, "intermediate_size"),
    ("num_heads", 3, "num_heads"),
    ("tie_word_embeddings", True, "tie_word_embeddings"),
])
def test_validation_names_the_bad_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**{"hidden_size": 64, field: value}).validate()


def test_parameter_count_matches_state_dict(tiny_model):
    n = sum(v.size for v in tiny_model.params.values())
    assert tiny_model.config.parameter_count() == n
