"""Overlay packages are untrusted input: a manifest cannot steer the host or reach outside the package.

Reproduces the reliability review's F4.1 (manifest names libc ``system``),
F4.2 (reordered ``csim.args``), F4.3 (symbolic links out of the package) and
F4.4 (sections of the wrong JSON type), and fuzzes the verifier: any edit of
a valid manifest is either accepted or refused with ManifestError -- never
another exception.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host_helpers import edit_manifest, rehash_manifest, stub_overlay, tiny_model
from mmfree_hls.runtime import ManifestError, load_manifest


def make_overlay(tmp, seed: int, sleep_us: int = 0):
    """A small on-chip overlay for pynq-z2 around the ABI stub library (fast to build)."""
    model = tiny_model(seed=seed, hidden_size=64, intermediate_size=128)
    stub_overlay(tmp / "overlay", model, board="pynq-z2", name="tiny", sleep_us=sleep_us,
                 csim_sources=[tmp / "overlay_lib" / "abi_stub.cpp"])
    return tmp / "overlay"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_overlay(tmp_path_factory.mktemp("pkg"), seed=5)


@pytest.fixture
def pkg(pristine, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(pristine, root, symlinks=True)
    return root


edit, rehash = edit_manifest, rehash_manifest


# ------------------------------------------------------------- F4.1 / F4.2
@pytest.mark.parametrize("symbol", ["system", "mmfree_info", "execv", ""])
def test_manifest_cannot_choose_the_c_entry_point(pkg, symbol):
    edit(pkg, lambda d: d["csim"].__setitem__("step_symbol", symbol))
    with pytest.raises(ManifestError, match="csim.step_symbol.*fixed by the ABI"):
        load_manifest(pkg)


@pytest.mark.parametrize("args", [["logits", "state", "x_in", "top"], ["x_in"], ["x_in", "state", "logits", "x_in"], "x",
                                  ["x_in", "state", "logits"]])         # the last: ABI 2's order, no top
def test_manifest_cannot_reorder_the_c_arguments(pkg, args):
    edit(pkg, lambda d: d["csim"].__setitem__("args", args))
    with pytest.raises(ManifestError, match="csim.args.*fixed by the ABI"):
        load_manifest(pkg)


def test_the_generate_command_refuses_it_too(pkg, capsys):
    from mmfree_hls.cli import main as cli_main
    edit(pkg, lambda d: d["csim"].__setitem__("step_symbol", "system"))
    assert cli_main(["generate", str(pkg), "--prompt", "H", "--max-new-tokens", "1"]) == 2
    assert "step_symbol" in capsys.readouterr().err


def test_the_abi_values_themselves_are_accepted(pkg):
    m = load_manifest(pkg)
    edit(pkg, lambda d: d["csim"].update(step_symbol="mmfree_step", args=m.layout.ports))
    load_manifest(pkg)


# ------------------------------------------------------------------- F4.3
def test_library_symlinked_out_of_the_package_is_refused(pkg, tmp_path):
    lib = pkg / "csim" / "libmmfree_csim.so"
    outside = tmp_path / "elsewhere.so"
    shutil.copy2(lib, outside)
    lib.unlink()
    os.symlink(outside, lib)
    with pytest.raises(ManifestError, match="libmmfree_csim.so: is a symbolic link"):
        load_manifest(pkg)


def test_file_symlinked_out_passes_no_hash_check(pkg, tmp_path):
    emb = pkg / "embeddings.npy"
    outside = tmp_path / "emb.npy"
    shutil.copy2(emb, outside)
    emb.unlink()
    os.symlink(outside, emb)
    rehash(pkg)                                   # the recorded hash even matches the linked file
    with pytest.raises(ManifestError, match="embeddings.npy: is a symbolic link"):
        load_manifest(pkg)


def test_directory_symlink_inside_the_package_is_refused(pkg, tmp_path):
    outside = tmp_path / "src"
    shutil.copytree(pkg / "csim" / "src", outside)
    shutil.rmtree(pkg / "csim" / "src")
    os.symlink(outside, pkg / "csim" / "src")
    (outside / "added.cpp").write_text("// not covered by any hash")
    with pytest.raises(ManifestError, match="src: is a symbolic link"):
        load_manifest(pkg)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "~/x", "a\\..\\b", "a\x00b"])
def test_paths_in_the_manifest_stay_inside(pkg, path):
    edit(pkg, lambda d: d.__setitem__("tokenizer", path))
    with pytest.raises(ManifestError, match="tokenizer"):
        load_manifest(pkg)


# ------------------------------------------------------------------- F4.4
@pytest.mark.parametrize("key,value", [("buffers", []), ("embeddings", "embeddings.npy"), ("engine", None),
                                       ("model", [1]), ("ip", []), ("csim", "x"), ("files", []),
                                       ("bitstream", "x.bit"), ("name", 3), ("format_version", True),
                                       ("format_version", 2.0), ("format_version", "2")])
def test_sections_of_the_wrong_type(pkg, key, value):
    edit(pkg, lambda d: d.__setitem__(key, value))
    with pytest.raises(ManifestError, match=key):
        load_manifest(pkg)


@pytest.mark.parametrize("mutate", [
    lambda d: d["embeddings"].__setitem__("shape", 5),
    lambda d: d["ip"].__setitem__("registers", {"x_in": 3}),
    lambda d: d["ip"]["registers"].__setitem__("n", "scalar"),
    lambda d: d["model"].__setitem__("eos_token_id", "x"),
    lambda d: d["model"].__setitem__("tie_word_embeddings", "false"),
    lambda d: d["files"].__setitem__(next(iter(d["files"])), {"sha256": "0" * 64, "bytes": 1e400}),
    lambda d: d["files"].__setitem__("csim", {"sha256": "0" * 64, "bytes": 1}),
])
def test_malformed_entries_are_manifest_errors(pkg, mutate):
    edit(pkg, mutate)
    with pytest.raises(ManifestError):
        load_manifest(pkg)


# ------------------------------------------------------------------- the pass's scalar registers
@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["ip"]["registers"].pop("n"), "no scalar register for ['n']"),
    (lambda d: d["ip"]["registers"]["slot"].update(kind="pointer"), "no scalar register for ['slot']"),
    (lambda d: d["ip"]["registers"]["load_mask"].pop("kind"), "no scalar register for ['load_mask']"),
    (lambda d: [d["ip"]["registers"].pop(a) for a in ("mode", "store_mask")],
     "no scalar register for ['mode', 'store_mask']"),
    # a scalar moved onto a pointer: the IP would take an address for the lane count
    (lambda d: d["ip"]["registers"]["n"].update(offset=d["ip"]["registers"]["x_in"]["offset"]), "overlap"),
])
def test_the_pass_scalars_must_be_scalar_registers(pkg, mutate, words):
    """The host writes n, mode, slot and the state masks before every start: a package whose
    register map lacks one (or calls it a pointer) would leave the IP reading a stale value."""
    edit(pkg, mutate)
    with pytest.raises(ManifestError, match=re.escape(words)):
        load_manifest(pkg)


# ------------------------------------------------------------------- fuzz
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON = st.recursive(JSON_LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_manifest_edits_raise_only_manifest_errors(pristine, tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fuzz") / "pkg"
    shutil.copytree(pristine, root)
    manifest = json.loads((root / "manifest.json").read_text())
    paths = [p for p in _paths(manifest) if p]
    mutated = copy.deepcopy(manifest)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node = mutated
        try:
            for k in path[:-1]:
                node = node[k]
            action = data.draw(st.sampled_from(["replace", "delete"]))
            if action == "delete" and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = data.draw(JSON)
        except (KeyError, IndexError, TypeError):
            continue                                  # an earlier edit removed this path
    (root / "manifest.json").write_text(json.dumps(mutated))
    try:
        load_manifest(root)
    except ManifestError as e:
        assert "manifest.json" in str(e) or str(root) in str(e)
    finally:
        shutil.rmtree(root.parent)


def test_a_non_finite_embedding_row_is_named(pkg):
    import numpy as np
    emb = np.load(pkg / "embeddings.npy")
    emb[42, 3] = np.nan
    np.save(pkg / "embeddings.npy", emb)
    rehash(pkg)
    with pytest.raises(ManifestError, match=r"embeddings.npy: row 42 \(token id 42\) holds a non-finite"):
        load_manifest(pkg)


def test_board_must_match_board_info(pkg):
    edit(pkg, lambda d: d.__setitem__("board", "zcu104"))           # board_info still says pynq-z2
    with pytest.raises(ManifestError, match="does not match board_info"):
        load_manifest(pkg)
