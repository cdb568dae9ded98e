"""Damaged and hostile checkpoints: every one is refused with a message naming the field, file or tensor.

Each case reproduces a probe of the reliability review (F1.x, F2.1) on a
small checkpoint built here, and asserts the outcome the review found wrong:
no silent acceptance, no raw traceback, nothing of the user's overwritten.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from mmfree_hls import ConfigError, ModelConfig, load_checkpoint, save_checkpoint
from mmfree_hls.checkpoint import PACKED_FILE, CheckpointError, gamma_key, import_checkpoint, packed_key
from mmfree_hls.cli import main as cli_main
from mmfree_hls.fsio import MARKER
from mmfree_hls.hgrn_bit import map_reference_config
from mmfree_hls.reference import MMFreeLM, init_random_state_dict
from mmfree_hls.safetensors_io import read_header

SMALL = {"model_type": "hgrn_bit", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2}
BITLINEAR = "model.layers.0.attn.i_proj.weight"


def make_reference(root: Path, seed: int = 0, patch=None, **fields) -> Path:
    """A reference-layout checkpoint (config.json + model.safetensors); ``patch(sd)`` edits the weights."""
    raw = dict(SMALL, **fields)
    cfg, _ = map_reference_config(raw)
    sd = {k: np.asarray(v, np.float32) for k, v in init_random_state_dict(cfg, seed).items()}
    if patch is not None:
        patch(sd)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(raw))
    save_file(sd, str(root / "model.safetensors"))
    return root


def rewrite_packed(path: Path, edit) -> None:
    with safe_open(str(path), framework="numpy") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k).copy() for k in f.keys()}
    edit(sd)
    save_file(sd, str(path), metadata=meta)


# ------------------------------------------------------------ F1.2 NaN / Inf
@pytest.mark.parametrize("key,value", [(BITLINEAR, np.nan), (BITLINEAR, np.inf),
                                        ("model.layers.1.attn_norm.weight", np.nan),
                                        ("model.embeddings.weight", -np.inf),
                                        ("model.lower_bounds", np.nan)])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, key, value):
    def patch(sd):
        sd[key].flat[3] = value
    ref = make_reference(tmp_path / "ref", patch=patch)
    with pytest.raises(CheckpointError, match=rf"tensor {key} holds 1 non-finite"):
        load_checkpoint(ref)
    with pytest.raises(CheckpointError, match=rf"tensor {key} holds 1 non-finite"):
        load_checkpoint(ref, keep_float=True)
    with pytest.raises(CheckpointError, match=rf"tensor {key}"):
        import_checkpoint(ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()                   # refused before anything was written
    assert cli_main(["import", str(ref), str(tmp_path / "cli")]) == 2


def test_non_finite_state_dict_is_not_saved(tmp_path, tiny_model):
    sd = {k: np.array(v) for k, v in tiny_model.params.items()}
    sd["model.norm.weight"][0] = np.nan
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        save_checkpoint(tiny_model.config, tmp_path / "x", sd)
    assert not (tmp_path / "x" / "model.safetensors").exists()


# ------------------------------------------------- F1.3 packed bytes and gamma
@pytest.fixture
def imported(tmp_path):
    return import_checkpoint(make_reference(tmp_path / "ref", seed=4), tmp_path / "ours")


def test_a_flipped_valid_code_is_caught_by_the_default_check(imported):
    key = packed_key("model.layers.0.attn.i_proj", "2bit")

    def flip(sd):                                   # +1 (01) <-> -1 (11): still a valid code
        b = sd[key]
        idx = np.flatnonzero(((b & 0b11) == 0b01) | ((b & 0b11) == 0b11))[0]
        b.flat[idx] ^= 0b10
    rewrite_packed(imported / PACKED_FILE, flip)
    with pytest.raises(CheckpointError, match=f"damaged.*{key}"):
        load_checkpoint(imported)                   # default verify="hash"
    assert cli_main(["convert", str(imported), "--out", str(imported.parent / "p"), "--no-compile"]) == 2


@pytest.mark.parametrize("gamma", [np.nan, 0.0, -11.9, np.inf])
def test_damaged_gamma_is_refused_in_every_mode(imported, gamma):
    key = gamma_key("model.layers.1.mlp.down_proj")
    rewrite_packed(imported / PACKED_FILE, lambda sd: sd.__setitem__(key, np.array([gamma])))
    for verify in ("hash", "full", "none"):
        with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
            load_checkpoint(imported, verify=verify)


def test_packed_file_without_recorded_hashes_is_checked_by_requantising(imported):
    """An older packed file (no packed hashes, or a float hash removed) is re-quantised, not trusted."""
    path = imported / PACKED_FILE
    key = packed_key("lm_head", "2bit")
    with safe_open(str(path), framework="numpy") as f:
        meta, sd = f.metadata(), {k: f.get_tensor(k).copy() for k in f.keys()}
    old = {k: v for k, v in meta.items() if not (k.startswith("sha256:") and "packed" in k or "gamma" in k)}
    del old["sha256:lm_head.weight"]
    save_file(sd, str(path), metadata=old)
    load_checkpoint(imported)                       # intact: loads (F1.4: no false "stale" report)
    sd[key][0, 0] ^= 0b10 if sd[key][0, 0] & 0b01 else 0b01
    save_file(sd, str(path), metadata=old)
    with pytest.raises(CheckpointError, match=r"lm_head \(2bit\) does not match its float weight"):
        load_checkpoint(imported)


# ------------------------------------------------------- F1.5-F1.9 config.json
@pytest.mark.parametrize("field,value,message", [
    ("tie_word_embeddings", "false", "tie_word_embeddings.*must be true or false"),
    ("use_short_conv", "false", "use_short_conv.*must be true or false"),
    ("use_lower_bound", 0.5, "use_lower_bound.*must be true or false"),
    ("intermediate_size", True, "intermediate_size"),
    ("hidden_ratio", float("inf"), "hidden_ratio.*finite"),
    ("hidden_ratio", 1e300, "hidden_ratio"),
    ("eos_token_id", "x", "eos_token_id.*token id"),
    ("bos_token_id", -7, "bos_token_id.*token id"),
    ("eos_token_id", 64, "eos_token_id.*0..63"),
    ("max_position_embeddings", -5, "max_position_embeddings.*positive integer"),
    ("attn_mode", ["chunk"], "attn_mode"),
])
def test_config_fields_are_validated_strictly(tmp_path, field, value, message):
    raw = dict(SMALL, **{field: value})
    with pytest.raises(ConfigError, match=message):
        map_reference_config(raw)
    root = tmp_path / "ref"
    make_reference(root)
    (root / "config.json").write_text(json.dumps(raw))           # Python's json writes Infinity too
    assert cli_main(["import", str(root), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_tie_word_embeddings_true_is_still_understood():
    cfg, tied = map_reference_config(dict(SMALL, tie_word_embeddings=True))
    assert tied and cfg.tie_word_embeddings is False


def test_missing_or_misspelt_size_field_is_named():
    raw = dict(SMALL)
    raw["hidden_sise"] = raw.pop("hidden_size")
    with pytest.raises(ConfigError, match="no 'hidden_size' field.*'hidden_sise'"):
        map_reference_config(raw)


def test_non_utf8_config_names_the_file(tmp_path, capsys):
    root = make_reference(tmp_path / "ref")
    (root / "config.json").write_bytes(b'{"model_type": "hgrn_bit", \xff}')
    assert cli_main(["import", str(root), str(tmp_path / "out")]) == 2
    assert "config.json: not UTF-8" in capsys.readouterr().err


# ------------------------------------------------------------- F1.1 container
def test_string_data_offsets_are_a_clear_error(tmp_path):
    path = tmp_path / "x.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(CheckpointError, match="'w'.*non-negative integers"):
        read_header(path)


# --------------------------------------------------------- F1.10/F1.11 shards
def _sharded(tmp_path: Path) -> tuple[Path, dict]:
    root = make_reference(tmp_path / "ref")
    with safe_open(str(root / "model.safetensors"), framework="numpy") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    os.remove(root / "model.safetensors")
    save_file(sd, str(root / "shard.safetensors"))
    return root, {k: "shard.safetensors" for k in sd}


@pytest.mark.parametrize("bad", ["../outside.safetensors", "ABSOLUTE", "sub/shard.safetensors", 7, {"a": 1}])
def test_shard_index_cannot_leave_the_checkpoint(tmp_path, bad):
    root, wm = _sharded(tmp_path)
    outside = tmp_path / "outside.safetensors"
    os.replace(root / "shard.safetensors", outside)
    if bad == "ABSOLUTE":
        bad = str(outside)
    wm[next(iter(wm))] = bad
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(CheckpointError, match="model.safetensors.index.json: shard"):
        load_checkpoint(root)
    assert cli_main(["import", str(root), str(tmp_path / "out")]) == 2


def test_shard_symlink_out_of_the_checkpoint_is_refused(tmp_path):
    root, wm = _sharded(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(root / "shard.safetensors", outside)
    os.symlink(outside, root / "shard.safetensors")
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(CheckpointError, match="symbolic link.*outside the checkpoint"):
        load_checkpoint(root)


# ----------------------------------------------------- F2.1 output directories
def test_import_force_never_replaces_a_directory_we_did_not_write(tmp_path):
    ref = make_reference(tmp_path / "ref")
    user = tmp_path / "user"
    user.mkdir()
    (user / "tokenizer_config.json").write_text('{"mine": 1}')
    for force in (False, True):
        with pytest.raises(FileExistsError, match="did not write"):
            import_checkpoint(ref, user, force=force)
    assert (user / "tokenizer_config.json").read_text() == '{"mine": 1}'
    out = import_checkpoint(ref, tmp_path / "ours")
    assert (out / MARKER).is_file()


def test_save_checkpoint_leaves_no_temporary_files(tmp_path, tiny_model):
    out = save_checkpoint(tiny_model, tmp_path / "ck")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "config.json", "model.safetensors", PACKED_FILE]
    tensors, meta = read_header(out / PACKED_FILE)
    assert all(f"sha256:{k}" in meta for k in tensors)      # every packed tensor's hash is recorded
    assert load_checkpoint(out).config == tiny_model.config


def test_full_disk_while_writing_weights_names_the_file(tmp_path, tiny_model, monkeypatch):
    import errno

    from mmfree_hls.fsio import OutputError
    from mmfree_hls.safetensors_io import SafetensorsWriter
    real_write = SafetensorsWriter.write

    def full(self, name, array):
        if name.endswith("mlp_norm.weight"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, name, array)
    monkeypatch.setattr(SafetensorsWriter, "write", full)
    with pytest.raises(OSError):
        save_checkpoint(tiny_model, tmp_path / "ck")
    assert not list((tmp_path / "ck").glob("*.partial"))          # nothing half-written is left
    assert not (tmp_path / "ck" / "model.safetensors").exists()
    monkeypatch.undo()

    real_open = open

    def full_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        if str(path).endswith("model.safetensors.partial"):
            def write(_data):
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = write
        return fh
    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(OutputError, match=r"ck2/model.safetensors: no space left on the device"):
        save_checkpoint(tiny_model, tmp_path / "ck2")
    monkeypatch.undo()
    assert not list((tmp_path / "ck2").glob("*.partial"))
