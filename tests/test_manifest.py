"""Overlay packages: what the manifest records, and every kind of corruption refused."""

import shutil

import numpy as np
import pytest

from host_helpers import edit_manifest, rehash_manifest, stub_overlay, tiny_model
from mmfree_hls.engine.layout import Shape, build_image, weights_buffer
from mmfree_hls.engine.presets import get_preset
from mmfree_hls.runtime import ManifestError, load_manifest
from mmfree_hls.runtime.buffers import BufferLayout
from mmfree_hls.runtime.manifest import sha256_file, vitis_register_map


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A streamed pynq-z2 package (two weight ports, weights.bin) with a bitstream."""
    tmp = tmp_path_factory.mktemp("pkg")
    model = tiny_model(seed=3, hidden_size=64, intermediate_size=128)
    (tmp / "bd").mkdir()
    (tmp / "bd" / "top.bit").write_bytes(b"\x00\x09fake bitstream")
    (tmp / "bd" / "top.hwh").write_text("<MODULES/>")
    stub_overlay(tmp / "overlay", model, board="pynq-z2", tier="streamed", name="tiny",
                 csim_sources=[tmp / "overlay_lib" / "abi_stub.cpp"], bitstream=tmp / "bd" / "top.bit",
                 hwh=tmp / "bd" / "top.hwh")
    return tmp / "overlay", model


@pytest.fixture
def pkg(pristine, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(pristine[0], root)
    return root


edit, rehash = edit_manifest, rehash_manifest


def _rebuild_engine(d):
    """Recompute the manifest's engine section for its (edited) model, board and tier, so that
    a check behind the engine check has to catch the edit."""
    from mmfree_hls.config import ModelConfig
    from mmfree_hls.engine.project import engine_record
    eng = d["engine"]
    preset = get_preset(eng["board"], eng["tier"], **{k: eng["knobs"][k] for k in
                                                      ("batch_slots", "prefill_chunk", "topk")})
    d["engine"] = engine_record(ModelConfig.from_dict(d["model"]), preset, eng["packing"])


def refused(root, *patterns, exc=ManifestError):
    with pytest.raises(exc) as info:
        load_manifest(root)
    msg = str(info.value)
    for p in patterns:
        assert p in msg, msg
    if exc is ManifestError:
        assert "fix:" in msg
    return msg


# --------------------------------------------------------------------- contents
def test_manifest_records_everything_the_issue_lists(pristine):
    root, model = pristine
    m = load_manifest(root)
    d = m.data
    c = model.config
    assert m.config == c and m.board == "pynq-z2" and m.tier == "streamed"
    assert d["board_info"]["part"] == "xc7z020clg400-1"
    L, e = c.num_hidden_layers, c.state_size
    # N token lanes, B state slots, a top-K per lane: the build's (pynq-z2 streamed: 1, 1, 8)
    p = get_preset("pynq-z2", "streamed")
    N, B, K = p.token_lanes, p.batch_slots, p.topk
    assert (m.layout.lanes, m.layout.slots, m.layout.topk) == (N, B, K)
    nbytes = d["buffers"]["weights"]["nbytes"]
    assert d["buffers"] == {"weights": {"shape": [nbytes], "dtype": "uint8", "direction": "in", "nbytes": nbytes},
                            "x_in": {"shape": [N * c.d], "dtype": "float32", "direction": "in",
                                     "nbytes": 4 * N * c.d},
                            "state": {"shape": [B * L * e], "dtype": "float32", "direction": "inout",
                                      "nbytes": 4 * B * L * e},
                            "logits": {"shape": [c.vocab_size * N], "dtype": "float32", "direction": "out",
                                       "nbytes": 4 * c.vocab_size * N},
                            "top": {"shape": [N * K * 2], "dtype": "int32", "direction": "out", "nbytes": 8 * N * K}}
    # int mmfree_engine(n, mode, slot, load_mask, store_mask, x_in, state, logits, top, w0, w1):
    # ap_return, then the 32-bit scalars (two words each), then the 64-bit pointers (three words)
    regs = d["ip"]["registers"]
    assert {k: v["offset"] for k, v in regs.items()} == {
        "n": 0x18, "mode": 0x20, "slot": 0x28, "load_mask": 0x30, "store_mask": 0x38,
        "x_in": 0x40, "state": 0x4c, "logits": 0x58, "top": 0x64, "w0": 0x70, "w1": 0x7c}
    assert [k for k, v in regs.items() if v["kind"] == "scalar" and v["bits"] == 32] == \
        ["n", "mode", "slot", "load_mask", "store_mask"]
    assert all(v["kind"] == "pointer" and v["bits"] == 64 for k, v in regs.items() if k not in
               ("n", "mode", "slot", "load_mask", "store_mask"))
    assert d["ip"]["ap_return"]["offset"] == 0x10 and d["ip"]["top"] == "mmfree_engine"
    assert d["ip"]["instance"] == "mmfree_0" and "assumption" in d["ip"]
    assert d["tools"]["mmfree_hls"] and "gxx" in d["tools"]
    assert sorted(d["files"]) == sorted(["tiny.bit", "tiny.hwh", "csim/libmmfree_csim.so",
                                         "csim/src/abi_stub.cpp", "embeddings.npy", "weights.bin"])
    for rel, f in d["files"].items():
        assert f["sha256"] == sha256_file(root / rel) and len(f["sha256"]) == 64
    # The engine build: two HP ports of 8 bytes make a 16-byte word, 16 rows x 4 inputs a cycle.
    eng = d["engine"]
    assert (eng["board"], eng["tier"], eng["packing"], eng["K"], eng["R"], eng["lanes"]) == \
        ("pynq-z2", "streamed", "2bit", 2, 16, 64)
    assert d["ip"]["region_offset"] == eng["region_offset"] and d["ip"]["region_bytes"] == eng["region_bytes"]
    shape = Shape.of(c, "2bit", 16)
    np.testing.assert_array_equal(m.packed_weights(), weights_buffer(build_image(model, "2bit", 16), shape, 2, 8))
    np.testing.assert_array_equal(np.load(root / "embeddings.npy"), model.params["model.embeddings.weight"])


def test_register_map_derivation():
    m = vitis_register_map(["x_in", "state", "logits"])
    assert [r["offset"] for r in m["registers"].values()] == [0x10, 0x1c, 0x28]
    assert m["address_range"] == 0x34 and m["ap_return"] is None
    m = vitis_register_map(["weights", "x_in", "state", "logits"], return_bits=32)
    assert m["ap_return"]["offset"] == 0x10
    assert [r["offset"] for r in m["registers"].values()] == [0x18, 0x24, 0x30, 0x3c]
    m = vitis_register_map(["x_in", "state"], pointer_bits=32)
    assert [r["offset"] for r in m["registers"].values()] == [0x10, 0x18]
    # 32-bit scalars: a value word and a reserved word each
    m = vitis_register_map([("n", "scalar"), ("mode", "scalar"), "x_in"], return_bits=32)
    assert {k: (r["offset"], r["bits"], r["kind"]) for k, r in m["registers"].items()} == {
        "n": (0x18, 32, "scalar"), "mode": (0x20, 32, "scalar"), "x_in": (0x28, 64, "pointer")}
    assert m["address_range"] == 0x34


def test_on_chip_package_has_no_weight_buffer(tmp_path):
    model = tiny_model(seed=4, hidden_size=80, intermediate_size=160, use_lower_bound=False)
    m = stub_overlay(tmp_path / "ov", model, board="kv260", tier="on-chip", packing="1.6bit")
    assert m.layout.ports == ["x_in", "state", "logits", "top"] and m.packed_weights() is None
    assert "weights.bin" not in m.data["files"]
    assert {k: r["offset"] for k, r in m.data["ip"]["registers"].items()} == {
        "n": 0x18, "mode": 0x20, "slot": 0x28, "load_mask": 0x30, "store_mask": 0x38,
        "x_in": 0x40, "state": 0x4c, "logits": 0x58, "top": 0x64}
    assert m.data["engine"]["per"] == 5 and m.data["engine"]["K"] == 0


def test_verify_hashes_off_still_checks_sizes(pkg):
    data = (pkg / "weights.bin").read_bytes()
    (pkg / "weights.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    load_manifest(pkg, verify_hashes=False)                      # same size: accepted without hashing
    refused(pkg, "weights.bin", "SHA-256 does not match")
    (pkg / "weights.bin").write_bytes(data[:-7])
    with pytest.raises(ManifestError, match="truncated"):
        load_manifest(pkg, verify_hashes=False)


# ------------------------------------------------------------------- corruption
def test_missing_directory_or_manifest(pkg, tmp_path):
    with pytest.raises(FileNotFoundError, match="mmfree package"):
        load_manifest(tmp_path / "nope")
    (pkg / "manifest.json").unlink()
    refused(pkg, "manifest.json is missing", "mmfree package", exc=FileNotFoundError)


def test_manifest_not_json(pkg):
    (pkg / "manifest.json").write_text("{ truncated")
    refused(pkg, "manifest.json", "not valid JSON")


@pytest.mark.parametrize("field", ["buffers", "ip", "files", "model"])
def test_required_field_missing(pkg, field):
    edit(pkg, lambda d: d.pop(field))
    refused(pkg, f"required fields missing: {field}")


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.update(format="something-else"), "format is 'something-else'"),
    (lambda d: d.update(format_version=99), "format_version 99 is not supported"),
    (lambda d: d.update(board="ultra96"), "board 'ultra96' is not in the board table"),
    (lambda d: d.update(tier="cloud"), "tier 'cloud'"),
    (lambda d: d["model"].update(model_type="llama"), "model config is invalid"),
    (lambda d: (d["model"].update(vocab_size=65), _rebuild_engine(d)), "buffer 'logits' is [64] float32"),
    (lambda d: d["buffers"]["state"].update(shape=[31]), "nbytes 512 disagrees"),
    (lambda d: d["buffers"]["top"].update(shape=[14], nbytes=56), "buffer 'top' is [14] int32"),
    (lambda d: d["buffers"]["top"].update(dtype="float32"), "buffer 'top' is [16] float32"),
    (lambda d: d["buffers"].pop("top"), "the design needs"),
    (lambda d: d["engine"]["knobs"].update(batch_slots=2),
     "buffer 'x_in' is [64] float32 (in) but the model config (d=64, L=2, e=64, V=64) and the engine build "
     "(lanes=2, slots=2, topk=8) need [128] float32"),
    (lambda d: d["buffers"]["state"].update(direction="in"), "buffer 'state'"),
    (lambda d: d["buffers"].pop("x_in"), "the design needs"),
    (lambda d: d.update(engine="fast"), "engine must be an object"),
], ids=["format", "version", "board", "tier", "model_type", "config-vs-buffers", "nbytes", "top-size", "top-dtype",
        "top-missing", "slots-vs-buffers", "direction", "missing-buffer", "engine"])
def test_inconsistent_fields(pkg, mutate, words):
    edit(pkg, mutate)
    refused(pkg, words)


def test_listed_file_missing(pkg):
    (pkg / "embeddings.npy").unlink()
    refused(pkg, "embeddings.npy", "missing")


def test_file_modified_same_size(pkg):
    lib = pkg / "csim" / "libmmfree_csim.so"
    raw = bytearray(lib.read_bytes())
    raw[100] ^= 0xFF
    lib.write_bytes(bytes(raw))
    refused(pkg, "libmmfree_csim.so", "SHA-256 does not match", "re-run `mmfree package`")


def test_file_truncated(pkg):
    bit = pkg / "tiny.bit"
    bit.write_bytes(bit.read_bytes()[:-3])
    refused(pkg, "tiny.bit", "truncated or replaced")


def test_unlisted_file(pkg):
    (pkg / "csim" / "extra.so").write_bytes(b"x")
    refused(pkg, "extra.so", "not in the manifest")


def test_path_outside_package(pkg):
    edit(pkg, lambda d: d["embeddings"].update(file="../../etc/passwd"))
    refused(pkg, "points outside the package")


def test_referenced_file_without_hash(pkg):
    shutil.copy(pkg / "embeddings.npy", pkg / "emb2.npy")
    def m(d):
        d["embeddings"]["file"] = "emb2.npy"
    edit(pkg, m)
    refused(pkg, "emb2.npy")                        # unlisted, and named by embeddings.file


def test_bitstream_without_hwh_entry(pkg):
    (pkg / "tiny.hwh").unlink()
    edit(pkg, lambda d: d["files"].pop("tiny.hwh"))
    refused(pkg, "tiny.hwh", "named by 'bitstream.hwh' but missing")


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["engine"].update(packing="3bit"), "engine.packing '3bit' is unknown"),
    (lambda d: d["engine"].update(K=3), "engine.K = 3"),
    (lambda d: d["engine"].update(region_bytes=d["engine"]["region_bytes"] + 64), "engine.region_bytes"),
    (lambda d: d["engine"].update(words_per_token=7), "engine.words_per_token = 7"),
    (lambda d: d["engine"].update(abi=2), "C-sim ABI version 3"),
    (lambda d: d["engine"].update(tier="on-chip"), "engine section is for pynq-z2/on-chip"),
    (lambda d: d["engine"]["knobs"].update(vector_lanes="many"), "does not describe a build"),
], ids=["packing", "ports", "region", "words", "abi", "tier", "knob"])
def test_engine_section_is_recomputed_not_trusted(pkg, mutate, words):
    edit(pkg, mutate)
    refused(pkg, words)


def test_weight_file_bad_header(pkg):
    raw = bytearray((pkg / "weights.bin").read_bytes())
    raw[:4] = b"JUNK"
    (pkg / "weights.bin").write_bytes(bytes(raw))
    rehash(pkg)
    with pytest.raises(ManifestError, match="magic"):
        load_manifest(pkg).packed_weights()


def test_embeddings_of_another_shape(pkg):
    np.save(pkg / "embeddings.npy", np.zeros((64, 8), np.float32))
    rehash(pkg)
    refused(pkg, "embeddings.npy", "holds (64, 8) float32")
    (pkg / "embeddings.npy").write_bytes(b"not numpy at all")
    rehash(pkg)
    refused(pkg, "embeddings.npy", "not a readable .npy")


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["ip"]["registers"].pop("state"), "no pointer register for ['state']"),
    (lambda d: d["ip"]["registers"].pop("top"), "no pointer register for ['top']"),
    (lambda d: d["ip"]["registers"].pop("load_mask"), "no scalar register for ['load_mask']"),
    (lambda d: d["ip"]["registers"]["mode"].update(kind="pointer", bits=64), "no scalar register for ['mode']"),
    (lambda d: d["ip"]["registers"]["logits"].update(offset=0x20), "overlap"),
    (lambda d: d["ip"]["registers"]["x_in"].update(offset=0x12), "not a word offset"),
    (lambda d: d["ip"]["registers"]["x_in"].update(offset=0x4), "not a word offset"),
    (lambda d: d["ip"].pop("instance"), "ip.instance is missing"),
], ids=["missing", "missing-top", "missing-scalar", "scalar-as-pointer", "overlap", "unaligned", "control-space",
        "instance"])
def test_register_map_corruption(pkg, mutate, words):
    edit(pkg, mutate)
    refused(pkg, words)


def test_tier_and_buffers_must_agree(pkg):
    edit(pkg, lambda d: d.update(tier="on-chip"))
    refused(pkg, "engine section is for pynq-z2/streamed, the package for pynq-z2/on-chip")
    # the engine section made consistent with the tier: the weight buffer is still there

    def on_chip(d):
        d["tier"] = d["engine"]["tier"] = "on-chip"
        _rebuild_engine(d)
    edit(pkg, on_chip)
    refused(pkg, "tier 'on-chip' but the buffer table has weight buffer")


def test_buffer_layout_from_manifest_roundtrip(pristine):
    m = load_manifest(pristine[0])
    from mmfree_hls.engine.project import preset_of
    again = BufferLayout.from_manifest(m.layout.to_manifest(), m.config, preset_of(m.data["engine"]))
    assert again.to_manifest() == m.data["buffers"]
