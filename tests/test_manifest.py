"""Overlay packages: what the manifest records, and every kind of corruption refused."""

import json
import shutil

import numpy as np
import pytest

from host_helpers import build_abi_stub, tiny_model
from mmfree_hls import streamed
from mmfree_hls.commands.package import build_overlay
from mmfree_hls.runtime import ManifestError, load_manifest
from mmfree_hls.runtime.buffers import BufferLayout
from mmfree_hls.runtime.manifest import list_package_files, sha256_file, vitis_register_map


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkg")
    model = tiny_model(seed=3)
    c = model.config
    lib = build_abi_stub(tmp / "lib", c.d, c.num_hidden_layers, c.state_size, c.vocab_size)
    (tmp / "bd").mkdir()
    (tmp / "bd" / "top.bit").write_bytes(b"\x00\x09fake bitstream")
    (tmp / "bd" / "top.hwh").write_text("<MODULES/>")
    build_overlay(tmp / "overlay", model=model, board="pynq-z2", name="tiny", csim_library=lib,
                  csim_sources=[tmp / "lib" / "abi_stub.cpp"], bitstream=tmp / "bd" / "top.bit",
                  hwh=tmp / "bd" / "top.hwh", precision={"residual": "ap_fixed<16,6>"})
    return tmp / "overlay", model


@pytest.fixture
def pkg(pristine, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(pristine[0], root)
    return root


def edit(root, mutate):
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def rehash(root):
    """Make the file table consistent again, so a deeper check has to catch the problem."""
    def m(d):
        d["files"] = {rel: {"sha256": sha256_file(root / rel), "bytes": (root / rel).stat().st_size}
                      for rel in list_package_files(root)}
    edit(root, m)


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
    assert m.config == c and m.board == "pynq-z2" and m.tier == "on-chip"
    assert d["board_info"]["part"] == "xc7z020clg400-1"
    assert d["precision"] == {"residual": "ap_fixed<16,6>"}
    assert d["buffers"] == {"x_in": {"shape": [c.d], "dtype": "float32", "direction": "in", "nbytes": 4 * c.d},
                            "state": {"shape": [c.num_hidden_layers * c.state_size], "dtype": "float32",
                                      "direction": "inout", "nbytes": 4 * c.num_hidden_layers * c.state_size},
                            "logits": {"shape": [c.vocab_size], "dtype": "float32", "direction": "out",
                                       "nbytes": 4 * c.vocab_size}}
    assert {k: v["offset"] for k, v in d["ip"]["registers"].items()} == {"x_in": 0x10, "state": 0x1c, "logits": 0x28}
    assert d["ip"]["instance"] == "mmfree_0" and "assumption" in d["ip"]
    assert d["tools"]["mmfree_hls"] and "gxx" in d["tools"]
    assert sorted(d["files"]) == sorted(["tiny.bit", "tiny.hwh", "csim/libmmfree_csim.so",
                                         "csim/src/abi_stub.cpp", "embeddings.npy", "weights.bin"])
    for rel, f in d["files"].items():
        assert f["sha256"] == sha256_file(root / rel) and len(f["sha256"]) == 64
    # Packing: every BitLinear with offset, size, bits per weight and its scale 1/γ.
    pk = d["packing"]
    assert pk["layout"] == "2bit" and pk["bits_per_weight"] == 2.0
    ternary = {t["name"]: t for t in pk["tensors"] if t["kind"] == "ternary"}
    assert len(ternary) == 6 * c.num_hidden_layers + 1
    head = ternary["lm_head.weight"]
    assert head["shape"] == [c.vocab_size, c.d] and head["nbytes"] == c.vocab_size * c.d // 4
    assert head["scale"] == pytest.approx(model.ternary["lm_head"].scale)
    buf = np.fromfile(root / "weights.bin", dtype=np.uint8)
    np.testing.assert_array_equal(buf, streamed.write_buffer(model, "2bit"))
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


def test_streamed_package_has_a_weight_buffer(tmp_path):
    model = tiny_model(seed=4, use_lower_bound=False)
    c = model.config
    lib = build_abi_stub(tmp_path / "lib", c.d, c.num_hidden_layers, c.state_size, c.vocab_size)
    m = build_overlay(tmp_path / "ov", model=model, board="kv260", name="s", csim_library=lib,
                      tier="streamed", packing="1.6bit")
    assert m.layout.ports == ["weights", "x_in", "state", "logits"]
    assert m.data["buffers"]["weights"]["nbytes"] == m.data["packing"]["total_bytes"]
    assert m.data["packing"]["bits_per_weight"] == pytest.approx(1.6)
    # int mmfree_streamed_top(weights, x_in, logits, reset): ap_return first, state on chip.
    ip = m.data["ip"]
    assert ip["top"] == "mmfree_streamed_top" and ip["state_on_chip"] and ip["reset_register"] == "reset"
    assert ip["ap_return"]["offset"] == 0x10
    assert {k: (r["offset"], r["kind"]) for k, r in ip["registers"].items()} == {
        "weights": (0x18, "pointer"), "x_in": (0x24, "pointer"), "logits": (0x30, "pointer"),
        "reset": (0x3c, "scalar")}
    assert m.data["csim"]["step_symbol"] == "mmfree_streamed_step"


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
    (lambda d: d["model"].update(vocab_size=65), "buffer 'logits' is [64] float32"),
    (lambda d: d["buffers"]["state"].update(shape=[31]), "nbytes 128 disagrees"),
    (lambda d: d["buffers"]["state"].update(direction="in"), "buffer 'state'"),
    (lambda d: d["buffers"].pop("x_in"), "the design needs"),
    (lambda d: d.update(precision="fast"), "precision must be an object"),
], ids=["format", "version", "board", "tier", "model_type", "config-vs-buffers", "nbytes", "direction",
        "missing-buffer", "precision"])
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
    (lambda d: d["packing"].update(layout="3bit"), "packing layout '3bit' is unknown"),
    (lambda d: d["packing"].update(bits_per_weight=1.6), "bits_per_weight = 1.6 but layout 2bit"),
    (lambda d: d["packing"]["tensors"][5].update(offset=d["packing"]["tensors"][5]["offset"] + 64),
     "packing.tensors entry"),
    (lambda d: d["packing"]["tensors"].pop(), "entries, the model's weight buffer has"),
    (lambda d: next(t for t in d["packing"]["tensors"] if t["kind"] == "ternary").update(scale=-1.0),
     "must be a positive number"),
    (lambda d: d["packing"].update(total_bytes=12), "packing.total_bytes = 12"),
], ids=["layout", "bits", "offset", "count", "scale", "total"])
def test_packing_table_corruption(pkg, mutate, words):
    edit(pkg, mutate)
    refused(pkg, words)


def test_weight_file_of_another_model(pkg):
    other = tiny_model(seed=9, intermediate_size=48)
    streamed.write_buffer(other, "2bit").tofile(pkg / "weights.bin")
    rehash(pkg)
    refused(pkg, "weights.bin", "does not match the model")


def test_weight_file_bad_header(pkg):
    raw = bytearray((pkg / "weights.bin").read_bytes())
    raw[:4] = b"JUNK"
    (pkg / "weights.bin").write_bytes(bytes(raw))
    rehash(pkg)
    refused(pkg, "weights.bin", "bad magic")


def test_embeddings_of_another_shape(pkg):
    np.save(pkg / "embeddings.npy", np.zeros((64, 8), np.float32))
    rehash(pkg)
    refused(pkg, "embeddings.npy", "holds (64, 8) float32")
    (pkg / "embeddings.npy").write_bytes(b"not numpy at all")
    rehash(pkg)
    refused(pkg, "embeddings.npy", "not a readable .npy")


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["ip"]["registers"].pop("state"), "no pointer register for ['state']"),
    (lambda d: d["ip"]["registers"]["logits"].update(offset=0x20), "overlap"),
    (lambda d: d["ip"]["registers"]["x_in"].update(offset=0x12), "not a word offset"),
    (lambda d: d["ip"]["registers"]["x_in"].update(offset=0x4), "not a word offset"),
    (lambda d: d["ip"].pop("instance"), "ip.instance is missing"),
], ids=["missing", "overlap", "unaligned", "control-space", "instance"])
def test_register_map_corruption(pkg, mutate, words):
    edit(pkg, mutate)
    refused(pkg, words)


def test_tier_and_buffers_must_agree(pkg):
    edit(pkg, lambda d: d.update(tier="streamed"))
    refused(pkg, "tier 'streamed' but the buffer table has no weight buffer")


def test_buffer_layout_from_manifest_roundtrip(pristine):
    m = load_manifest(pristine[0])
    again = BufferLayout.from_manifest(m.layout.to_manifest(), m.config)
    assert again.to_manifest() == m.data["buffers"]
