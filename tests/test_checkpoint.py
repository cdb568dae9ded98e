"""Checkpoint import: reference hgrn_bit layouts in, our packed checkpoints out.

Every checkpoint here is built inside the test in the reference layout
(config.json + safetensors written by the safetensors library, or by hand for
BF16 and shards) from random weights.

Agreement bound: loading is exact. The model loaded from a checkpoint gives
logits bit-identical (difference 0.0, so identical argmax) to the numpy
reference ``MMFreeLM`` built from the same stored values, for F32, F16 and BF16
storage, single-file or sharded, whether it keeps float copies or only the
ternary weights, and whether the ternary weights come from quantising on load
or from the pre-packed file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from mmfree_hls import ConfigError, MMFreeLM, ModelConfig, load_checkpoint, save_checkpoint
from mmfree_hls.fsio import MARKER
from mmfree_hls.checkpoint import (PACKED_FILE, CheckpointError, gamma_key, import_checkpoint,
                                   packed_key)
from mmfree_hls.cli import main as cli_main
from mmfree_hls.hgrn_bit import map_reference_config
from mmfree_hls.packing import unpack_ternary
from mmfree_hls.quant import quantize_weights
from mmfree_hls.reference import bitlinear_names, expected_shapes, init_random_state_dict
from mmfree_hls.safetensors_io import (SafetensorsWriter, TensorSpec, bf16_to_float32,
                                       float32_to_bf16, read_array, read_header)

SMALL = {"model_type": "hgrn_bit", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2}
IDS = np.array([[1, 5, 9, 3, 60, 2], [7, 7, 0, 63, 12, 40]])


# ----------------------------------------------------------------- helpers
def _raw_write(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """A safetensors file written by hand (dtype code, raw little-endian array) -- independent of our writer."""
    header, blobs, offset = {}, [], 0
    for name, (code, arr) in tensors.items():
        b = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def _bf16_exact(a: np.ndarray) -> np.ndarray:
    """float32 values that bf16 holds exactly (low 16 bits cleared), computed without the module."""
    return (a.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


def write_reference(root: Path, raw_cfg: dict, sd: dict, dtype: str = "F32", shards: int = 1) -> dict:
    """Write a reference-layout checkpoint; returns the float32 values as stored."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(raw_cfg))
    if dtype == "F32":
        stored = {k: np.asarray(v, np.float32) for k, v in sd.items()}
        enc = {k: ("F32", v) for k, v in stored.items()}
    elif dtype == "F16":
        enc = {k: ("F16", np.asarray(v).astype(np.float16)) for k, v in sd.items()}
        stored = {k: v[1].astype(np.float32) for k, v in enc.items()}
    elif dtype == "BF16":
        stored = {k: _bf16_exact(v) for k, v in sd.items()}
        enc = {k: ("BF16", (v.view(np.uint32) >> 16).astype("<u2")) for k, v in stored.items()}
    else:
        raise ValueError(dtype)
    keys = list(enc)
    if shards == 1:
        if dtype == "BF16":
            _raw_write(root / "model.safetensors", enc)
        else:
            save_file({k: a for k, (_, a) in enc.items()}, str(root / "model.safetensors"))
        return stored
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: enc[k] for k in keys[i::shards]}
        _raw_write(root / name, part)
        weight_map.update({k: name for k in part})
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return stored


def reference_case(tmp_path: Path, seed: int = 0, dtype: str = "F32", shards: int = 1, **cfg_fields):
    raw = dict(SMALL, **cfg_fields)
    cfg, _ = map_reference_config(raw)
    sd = init_random_state_dict(cfg, seed)
    stored = write_reference(tmp_path / "ref", raw, sd, dtype, shards)
    return tmp_path / "ref", cfg, stored


def assert_same_logits(model: MMFreeLM, reference: MMFreeLM) -> None:
    got, want = model.logits(IDS), reference.logits(IDS)
    np.testing.assert_array_equal(got, want)                  # bound: exact
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


# -------------------------------------------------------------- bfloat16
def test_bf16_words_widen_exactly_to_float32():
    words = np.array([0x3F80, 0xC020, 0x4049, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001], dtype=np.uint16)
    want = np.array([1.0, -2.5, 3.140625, 0.0, -0.0, np.inf, -np.inf, 9.183549615799121e-41], np.float32)
    got = bf16_to_float32(words)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.isnan(bf16_to_float32(np.array([0x7FC0], np.uint16)))[0]


def test_float32_to_bf16_rounds_to_nearest_even():
    x = np.array([1.0, 1.00390625, 1.005859375, 1.0029296875, -3.0, np.nan], np.float32)
    # 1+2^-8 is a tie -> even (1.0); 1+1.5*2^-8 ties up to 1+2^-7; 1+0.75*2^-8 rounds down.
    got = float32_to_bf16(x)
    np.testing.assert_array_equal(got[:5], [0x3F80, 0x3F80, 0x3F81, 0x3F80, 0xC040])
    assert np.isnan(bf16_to_float32(got[5:]))[0]


# ---------------------------------------------------- reference checkpoints
CASES = {
    "f32_lower_bound": dict(dtype="F32"),
    "f16_no_lower_bound": dict(dtype="F16", use_lower_bound=False),
    "f32_explicit_intermediate": dict(dtype="F32", intermediate_size=96),
    "bf16": dict(dtype="BF16", rms_norm_eps=1e-5),
    "f16_sharded": dict(dtype="F16", shards=3),
    "bf16_sharded_hidden_ratio_2": dict(dtype="BF16", shards=2, hidden_ratio=2),
    "expand_2_no_bound": dict(dtype="F32", expand_ratio=2, use_lower_bound=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_checkpoint_logits_equal_numpy_reference(tmp_path, case):
    fields = dict(CASES[case])
    dtype, shards = fields.pop("dtype"), fields.pop("shards", 1)
    root, cfg, stored = reference_case(tmp_path, seed=len(case), dtype=dtype, shards=shards, **fields)
    reference = MMFreeLM(cfg, stored)
    full = load_checkpoint(root, keep_float=True)
    assert full.config.ffn_dim == cfg.ffn_dim and full.config.use_lower_bound == cfg.use_lower_bound
    assert_same_logits(full, reference)
    lean = load_checkpoint(root, keep_float=False)
    assert_same_logits(lean, reference)
    # The lean model holds no float copy of any BitLinear weight; it reads them from disk on demand.
    assert set(lean.params) == set(reference.params)
    assert not {p + ".weight" for p in bitlinear_names(cfg)} & set(lean.params.in_memory())
    for p in bitlinear_names(cfg):
        np.testing.assert_array_equal(lean.ternary[p].w_q, reference.ternary[p].w_q)
        assert lean.ternary[p].gamma == reference.ternary[p].gamma
        np.testing.assert_array_equal(lean.params[p + ".weight"], reference.params[p + ".weight"])


def test_config_mapping_follows_the_reference_rules():
    cfg, tied = map_reference_config(dict(SMALL, hidden_size=1024, hidden_ratio=None, num_heads=None,
                                          expand_ratio=None))
    assert cfg.ffn_dim == 2816 and cfg.num_heads == 1 and cfg.input_dim == 1024 and not tied
    cfg, _ = map_reference_config(dict(SMALL, hidden_size=2560, hidden_ratio=4))
    assert cfg.ffn_dim == 6912                                   # the published 2.7B MLP width
    cfg, _ = map_reference_config(dict(SMALL, intermediate_size=100))
    assert cfg.ffn_dim == 100                                    # explicit size wins, no rounding
    cfg, _ = map_reference_config(dict(SMALL, num_heads=4))
    assert cfg.num_heads == 1 and cfg.extra["reference_num_heads"] == 4
    assert expected_shapes(cfg)["model.layers.0.attn.g_norm.weight"] == (32,)   # norm spans all heads


def test_multi_head_reference_maps_to_one_gate_norm_over_all_heads(tmp_path):
    root, cfg, stored = reference_case(tmp_path, seed=3, num_heads=4)
    assert_same_logits(load_checkpoint(root), MMFreeLM(cfg, stored))


def test_tied_embeddings_feed_the_head(tmp_path):
    raw = dict(SMALL, tie_word_embeddings=True)
    cfg, tied = map_reference_config(raw)
    assert tied and not cfg.tie_word_embeddings
    sd = init_random_state_dict(cfg, 5)
    del sd["lm_head.weight"]                         # HF drops the tied copy when saving
    write_reference(tmp_path / "ref", raw, sd)
    untied = dict(sd, **{"lm_head.weight": sd["model.embeddings.weight"]})
    assert_same_logits(load_checkpoint(tmp_path / "ref", keep_float=False), MMFreeLM(cfg, untied))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("field,value,needle", [
    ("model_type", "llama", "model_type"),
    ("use_short_conv", True, "use_short_conv"),
    ("attn_mode", "parallel", "attn_mode"),
    ("expand_ratio", 2, "expand_ratio"),           # with the lower bound: the reference cannot run it
    ("num_heads", 3, "num_heads"),                 # does not divide hidden_size
    ("vocab_size", 0, "vocab_size"),
    ("hidden_act", "gelu", "hidden_act"),
])
def test_unsupported_or_invalid_config_names_the_field(tmp_path, field, value, needle):
    root, _, _ = reference_case(tmp_path)
    raw = dict(SMALL, **{field: value})
    (root / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=needle):
        load_checkpoint(root)


def test_missing_model_type_and_missing_config(tmp_path):
    root, _, _ = reference_case(tmp_path)
    (root / "config.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(ConfigError, match="model_type"):
        load_checkpoint(root)
    (root / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(root)


def _rewrite(root: Path, change) -> None:
    path = root / "model.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    change(sd)
    save_file(sd, str(path))


def test_unknown_key_is_named(tmp_path):
    root, _, _ = reference_case(tmp_path)
    _rewrite(root, lambda sd: sd.__setitem__("model.layers.0.attn.q_proj.weight", np.zeros((4, 4), np.float32)))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): model\.layers\.0\.attn\.q_proj\.weight"):
        load_checkpoint(root)


def test_missing_key_is_named(tmp_path):
    root, _, _ = reference_case(tmp_path)
    _rewrite(root, lambda sd: sd.pop("model.layers.1.mlp_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): model\.layers\.1\.mlp_norm\.weight"):
        load_checkpoint(root, keep_float=False)


def test_wrong_shape_is_named(tmp_path):
    root, _, _ = reference_case(tmp_path)
    key = "model.layers.1.attn.o_proj.weight"
    _rewrite(root, lambda sd: sd.__setitem__(key, np.zeros((32, 16), np.float32)))
    with pytest.raises(CheckpointError, match=rf"wrong shape for {key}: \(32, 16\), expected \(32, 32\)"):
        load_checkpoint(root)


def test_lower_bound_mismatch_gets_a_hint(tmp_path):
    root, _, _ = reference_case(tmp_path)
    (root / "config.json").write_text(json.dumps(dict(SMALL, use_lower_bound=False)))
    with pytest.raises(CheckpointError, match="model.lower_bounds.*\n.*hint: the weights have model.lower_bounds"):
        load_checkpoint(root)


def test_integer_tensor_is_rejected_by_name(tmp_path):
    root, _, _ = reference_case(tmp_path)
    key = "model.norm.weight"
    _rewrite(root, lambda sd: sd.__setitem__(key, np.ones(32, np.int8)))
    with pytest.raises(CheckpointError, match=rf"not floating point.*{key} \(I8\)"):
        load_checkpoint(root)


def test_pytorch_pickle_gets_conversion_instructions(tmp_path):
    root = tmp_path / "torch"
    root.mkdir()
    (root / "config.json").write_text(json.dumps(SMALL))
    (root / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(CheckpointError, match=r"(?s)PyTorch pickle.*save_file.*model\.safetensors"):
        load_checkpoint(root)


def test_shard_index_errors(tmp_path):
    root, _, _ = reference_case(tmp_path, dtype="F16", shards=2)
    index = root / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = sorted(set(data["weight_map"].values()))[0]
    key = next(k for k, v in data["weight_map"].items() if v == first)
    other = sorted(set(data["weight_map"].values()))[1]
    data["weight_map"][key] = other                             # index disagrees with the shards
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"{key}"):
        load_checkpoint(root)
    (root / first).unlink()
    with pytest.raises(FileNotFoundError, match=first):
        load_checkpoint(root)


def test_a_file_instead_of_the_directory(tmp_path):
    root, _, _ = reference_case(tmp_path)
    with pytest.raises(FileNotFoundError, match="pass the checkpoint directory"):
        load_checkpoint(root / "model.safetensors")


def test_truncated_safetensors_file(tmp_path):
    root, _, _ = reference_case(tmp_path)
    data = (root / "model.safetensors").read_bytes()
    (root / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(root)
    (root / "model.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(root)


# ------------------------------------------------------------ our format
def test_import_round_trip_keeps_dtype_and_logits(tmp_path):
    root, cfg, stored = reference_case(tmp_path, seed=11, dtype="BF16", shards=3)
    (root / "tokenizer.json").write_text("{}")
    dst = import_checkpoint(root, tmp_path / "ours")
    assert sorted(p.name for p in dst.iterdir()) == [MARKER, "config.json", "model.safetensors", PACKED_FILE,
                                                     "tokenizer.json"]
    tensors, _ = read_header(dst / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {"BF16"}        # stored bytes copied, not widened
    reference = MMFreeLM(cfg, stored)
    for keep_float in (True, False):
        for verify in ("hash", "full", "none"):
            assert_same_logits(load_checkpoint(dst, keep_float=keep_float, verify=verify), reference)


def test_packed_file_holds_the_reference_quantisation(tmp_path):
    root, cfg, stored = reference_case(tmp_path, seed=2, intermediate_size=70)   # rows not a multiple of 4 or 5
    dst = import_checkpoint(root, tmp_path / "ours")
    shapes = expected_shapes(cfg)
    with safe_open(str(dst / PACKED_FILE), framework="numpy") as f:
        assert f.metadata()["layouts"] == "2bit,1.6bit"
        for p in bitlinear_names(cfg):
            want = quantize_weights(stored[p + ".weight"])
            n_in = shapes[p + ".weight"][1]
            for layout in ("2bit", "1.6bit"):
                np.testing.assert_array_equal(unpack_ternary(f.get_tensor(packed_key(p, layout)), n_in, layout),
                                              want.w_q)
            assert f.get_tensor(gamma_key(p)).tolist() == [want.gamma]


def test_stale_packed_weights_are_detected(tmp_path):
    root, cfg, _ = reference_case(tmp_path, seed=4)
    dst = import_checkpoint(root, tmp_path / "ours")
    key = "model.layers.1.mlp.down_proj.weight"
    _rewrite(dst, lambda sd: sd.__setitem__(key, sd[key] * 3 + 0.1))
    with pytest.raises(CheckpointError, match=rf"stale.*{key}"):
        load_checkpoint(dst)
    load_checkpoint(dst, verify="none")                             # the user may choose to trust it


def test_corrupt_packed_weights_fail_full_verification(tmp_path):
    root, cfg, _ = reference_case(tmp_path, seed=6)
    dst = import_checkpoint(root, tmp_path / "ours", layouts=["2bit"])
    path = dst / PACKED_FILE
    with safe_open(str(path), framework="numpy") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = packed_key("model.layers.0.attn.g_proj", "2bit")
    sd[key] = sd[key].copy()
    sd[key][0, 0] ^= 0b01                              # one weight changes (0 <-> +1 or -1 <-> 0b10)
    if (sd[key][0, 0] & 0b11) == 0b10:
        sd[key][0, 0] ^= 0b11
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=f"damaged.*{key}"):   # the default check sees it too
        load_checkpoint(dst, keep_float=False, verify="hash")
    with pytest.raises(CheckpointError, match=r"model.layers.0.attn.g_proj \(2bit\).*1 ternary values differ"):
        load_checkpoint(dst, keep_float=False, verify="full")


def test_every_stored_layout_is_verified(tmp_path):
    root, cfg, _ = reference_case(tmp_path, seed=7)
    dst = import_checkpoint(root, tmp_path / "ours")                # 2bit (used to load) and 1.6bit
    path = dst / PACKED_FILE
    with safe_open(str(path), framework="numpy") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = packed_key("lm_head", "1.6bit")
    sd[key] = sd[key].copy()
    sd[key][3, 2] = (sd[key][3, 2] + 1) % 243                     # still a valid byte, other trits
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=f"damaged.*{key}"):   # a layout never read is hashed too
        load_checkpoint(dst, verify="hash")
    for keep_float in (False, True):
        with pytest.raises(CheckpointError, match=r"lm_head \(1.6bit\)"):
            load_checkpoint(dst, keep_float=keep_float, verify="full")


def test_packed_file_must_match_config(tmp_path):
    root, cfg, _ = reference_case(tmp_path, seed=8)
    dst = import_checkpoint(root, tmp_path / "ours", layouts=["1.6bit"])
    with safe_open(str(dst / PACKED_FILE), framework="numpy") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    sd.pop(gamma_key("lm_head"))
    save_file(sd, str(dst / PACKED_FILE), metadata=meta)
    with pytest.raises(CheckpointError, match=r"missing keys: lm_head\.weight_gamma"):
        load_checkpoint(dst)


def test_save_checkpoint_round_trip_and_overwrite_guard(tmp_path):
    cfg = ModelConfig(**{k: v for k, v in SMALL.items()}, use_lower_bound=False, intermediate_size=48)
    model = MMFreeLM.random(cfg, seed=9)
    out = save_checkpoint(model, tmp_path / "saved")
    assert (out / PACKED_FILE).is_file()
    assert_same_logits(load_checkpoint(out, verify="full"), model)
    assert_same_logits(load_checkpoint(out, keep_float=False, verify="full"), model)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(model, out)
    lean = load_checkpoint(out)
    with pytest.raises(ValueError, match="reads its float weights from"):
        save_checkpoint(lean, out, overwrite=True)
    again = save_checkpoint(lean, tmp_path / "again")                # float weights streamed from disk
    assert_same_logits(load_checkpoint(again, verify="full"), model)


def test_lean_params_refuse_a_changed_file(tmp_path):
    root, cfg, stored = reference_case(tmp_path, seed=13)
    lean = load_checkpoint(root)
    key = "model.layers.0.attn.i_proj.weight"
    lean.params["model.norm.weight"] = np.zeros(32)                 # assignments stay in memory
    assert "model.norm.weight" in lean.params.in_memory() and not lean.params["model.norm.weight"].any()
    _rewrite(root, lambda sd: sd.__setitem__(key, (sd[key] + 1).astype(np.float16)))   # size changes too
    with pytest.raises(CheckpointError, match=f"changed since this model was loaded, so {key}"):
        lean.params[key]


def test_force_import_replaces_only_checkpoint_files(tmp_path):
    root, _, _ = reference_case(tmp_path, seed=1)
    dst = tmp_path / "ours"
    import_checkpoint(root, dst)                                  # a checkpoint we wrote (marked)
    (dst / "notes.txt").write_text("mine")
    (dst / "tokenizer.json").write_text("{}")                     # stale, from an older import
    with pytest.raises(FileExistsError, match="--force"):
        import_checkpoint(root, dst)
    import_checkpoint(root, dst, force=True)
    assert (dst / "notes.txt").read_text() == "mine"
    assert not (dst / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="source directory"):
        import_checkpoint(root, root, force=True)


# --------------------------------------------------------------- writer
def test_writer_output_is_read_back_by_the_library(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a.u8": rng.integers(0, 255, (3, 5), dtype=np.uint8), "b.f64": rng.standard_normal(3),
              "c.f16": rng.standard_normal((2, 7)).astype(np.float16), "d.f32": rng.standard_normal(9).astype(np.float32)}
    specs = [TensorSpec(k, {np.uint8: "U8", np.float64: "F64", np.float16: "F16", np.float32: "F32"}[v.dtype.type],
                        v.shape) for k, v in arrays.items()]
    with SafetensorsWriter(tmp_path / "x.safetensors", specs, {"k": "v"}) as w:
        for k in reversed(list(arrays)):                          # any order
            w.write(k, arrays[k])
    with safe_open(str(tmp_path / "x.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
        for k, v in arrays.items():
            np.testing.assert_array_equal(f.get_tensor(k), v)
    tensors, _ = read_header(tmp_path / "x.safetensors")
    assert all(t.start % np.dtype(arrays[k].dtype).itemsize == 0 for k, t in tensors.items())
    x = np.array([[1.5, -2.0, 3.140625]], np.float32)
    with SafetensorsWriter(tmp_path / "bf.safetensors", [TensorSpec("w", "BF16", (1, 3))]) as w:
        with pytest.raises(ValueError, match="spec says BF16"):
            w.write("w", x)                                         # BF16 takes raw uint16 words
        w.write("w", float32_to_bf16(x))
    info = read_header(tmp_path / "bf.safetensors")[0]["w"]
    np.testing.assert_array_equal(read_array(info), x)
    with safe_open(str(tmp_path / "bf.safetensors"), framework="numpy") as f:
        assert f.get_slice("w").get_dtype() == "BF16"
    with pytest.raises(CheckpointError, match="never written"):
        with SafetensorsWriter(tmp_path / "y.safetensors", specs) as w:
            w.write("a.u8", arrays["a.u8"])
    assert not (tmp_path / "y.safetensors").exists() and not list(tmp_path.glob("*.partial"))


# -------------------------------------------------------------------- CLI
def test_cli_import_and_info(tmp_path, capsys):
    root, cfg, _ = reference_case(tmp_path, seed=12, dtype="F16")
    assert cli_main(["import", str(root), str(tmp_path / "ours")]) == 0
    assert "imported" in capsys.readouterr().out
    assert cli_main(["import", str(root), str(tmp_path / "ours")]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main(["info", str(tmp_path / "ours"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == cfg.parameter_count()
    tensors, _ = read_header(tmp_path / "ours" / PACKED_FILE)
    for layout in ("2bit", "1.6bit"):
        stored = sum(t.nbytes for k, t in tensors.items() if k.endswith(packed_key("", layout)[1:]))
        assert info["packed_bytes"][layout] == stored
    assert info["state"]["values_per_token"] == cfg.num_hidden_layers * cfg.hidden_size
    assert info["stored_dtypes"] == ["F16"] and info["packed_layouts"] == ["2bit", "1.6bit"]
    assert cli_main(["info", str(root)]) == 0
    assert "packed 1.6bit" in capsys.readouterr().out
    (root / "config.json").write_text(json.dumps(dict(SMALL, model_type="mamba")))
    assert cli_main(["info", str(root)]) == 2
    assert "model_type" in capsys.readouterr().err
