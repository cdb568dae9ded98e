"""The board path through the real ``pynq`` package (4.0.0), with a cache that is not coherent.

``PynqBackend`` and ``Accelerator`` run through pynq's own ``Overlay`` (the pynqmetadata
parser reading ``tests/data/mmfree_engine_<board>.hwh``: a ZCU104 and a PYNQ-Z2), ``MMIO``, ``allocate`` and
``PynqBuffer``. Only what a PYNQ image provides below pynq is faked (``host_helpers.FakeBoard``):
XRT buffer objects behind a write-back CPU cache that the IP's masters do not see, the FPGA
manager, ``/dev/mem`` (the IP's registers run a C-simulation pass with the scalars written
into them) and ``munmap``.

Truth is the C-simulation backend on the same package and library: every scenario runs on
both, and the board must return exactly the same numbers, lose no host write to an
invalidate, and never let the IP touch memory outside a live buffer.

These tests need pynq, which cannot share ``.venv`` with TensorFlow: ``make test`` runs them
with ``.venv-board`` (``MMFREE_REAL_PYNQ=1`` makes a missing pynq an error, not a skip).
"""

import json
import os
import shutil
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("MMFREE_REAL_PYNQ"):
    import pynq  # noqa: F401  (the board-side venv must have it)
else:
    pytest.importorskip("pynq", reason="needs pynq 4.0.0: run with .venv-board (make test does)")

from host_helpers import STUB_FAIL_MARK, FakeBoard, FakeMMIO, bitstream_bytes, stub_overlay, tiny_model
from mmfree_hls.engine.presets import get_preset
from mmfree_hls.runtime import Accelerator, AcceleratorError, DeviceTimeoutError, ManifestError, load_manifest
from mmfree_hls.runtime.backend_csim import CSimBackend
from mmfree_hls.runtime.backend_pynq import BufferLeakWarning, PynqBackend, expected_hwh_registers
from mmfree_hls.runtime.buffers import DeviceBuffers
from mmfree_hls.runtime.manifest import write_manifest

DATA = Path(__file__).parent / "data"
HWH = DATA / "mmfree_engine_zcu104.hwh"
#: board → its fixture .hwh, PS family, part, K weight ports of the streamed preset, PL clock (MHz)
BOARDS = {
    "zcu104": dict(hwh=HWH, ps="zynq_ultra", part="xczu7ev-ffvc1156-2-e", K=4, mhz=250.0),
    "pynq-z2": dict(hwh=DATA / "mmfree_engine_pynq_z2.hwh", ps="zynq7", part="xc7z020clg400-1",
                    K=2, mhz=125.0),
}
FAIL_TOKEN = 4              # its embedding makes the C-simulation step fail (status 7)


class Package(tuple):
    """(path, model) of an engine package, and the board it was built for."""

    board: str


@pytest.fixture(scope="module", params=sorted(BOARDS))
def engine_package(request, tmp_path_factory):
    """A streamed-tier package for the engine interface: the pass's scalars (n, mode, slot,
    load_mask, store_mask), x_in, state, logits, top and w0..w{K-1} pointers, ap_return; the
    board's fixture .hwh and a .bit pynq can parse."""
    board = request.param
    spec = BOARDS[board]
    tmp = tmp_path_factory.mktemp(f"engine-{board}")
    # The narrowest model both streamed engines take (a row block must outlast its write-back).
    model = tiny_model(seed=5, hidden_size=256, intermediate_size=512)
    model.params["model.embeddings.weight"][FAIL_TOKEN, 0] = STUB_FAIL_MARK
    assert get_preset(board, "streamed").K == spec["K"]
    (tmp / "hw").mkdir()
    bit = tmp / "hw" / "engine.bit"
    bit.write_bytes(bitstream_bytes(spec["hwh"].stem, spec["part"]))
    root = tmp / "overlay"
    # The C-simulation is the ABI-3 stub (exact, fast, it keeps its slots' states and fails on
    # demand), built for the preset's lanes and slots; the weights buffer is the engine's own
    # (header + K port regions).
    stub_overlay(root, model, board=board, tier="streamed", name="engine", bitstream=bit, hwh=spec["hwh"])
    pkg = Package((root, model))
    pkg.board = board
    return pkg


@pytest.fixture
def board(engine_package, tmp_path, monkeypatch):
    return FakeBoard(tmp_path, BOARDS[engine_package.board]["ps"]).install(monkeypatch)


def _device_model(path, board):
    """The IP's datapath: the package's C-simulation step, bound by the project's CSimBackend."""
    m = load_manifest(path)
    return board.attach_engine(m, CSimBackend(m.csim_library, m.layout))


def _open_board(path, board, timeout_s=0.2) -> Accelerator:
    _device_model(path, board)
    return Accelerator.open(path, backend="pynq", timeout_s=timeout_s)


def _bos(board, acc):
    """name → the XRT buffer object behind each of the session's buffers."""
    by_addr = {bo.paddr: bo for bo in board.bos}
    return {n: by_addr[int(a.device_address)] for n, a in acc._buffers.arrays.items()}


# ------------------------------------------------------------------ the write-back-cache scenarios
def _x(model, tok=9):
    return model.embed(tok).astype(np.float32)


def _steps_then_reset_then_state(a, m):
    a.step(5), a.step(6)
    a.reset()
    return [a.state]


def _reset_state_step(a, m):
    a.step(5), a.step(6)
    a.reset()
    return [a.state, a.step(9)]


def _reset_execute_step(a, m):
    a.step(5)
    a.reset()
    return [*a.execute(_x(m)), a.step(9)]


def _execute_then_state(a, m):
    return [a.step(5), a.step(6), *a.execute(_x(m)), a.state]


def _execute_state_step(a, m):
    return [a.step(5), a.step(6), *a.execute(_x(m)), a.state, a.step(7)]


def _execute_step(a, m):
    return [a.step(5), a.step(6), *a.execute(_x(m)), a.step(7)]


def _execute_from_given_state(a, m):
    given = np.full((m.config.num_hidden_layers, m.config.state_size), 0.25)
    return [a.step(5), *a.execute(_x(m), given), a.state, a.step(6)]


def _throughput_then_state(a, m):
    a.step(5)
    a.throughput_test(3, token_id=2)
    return [a.state, a.step(6)]


def _generate_twice(a, m):
    first = np.array(list(a.generate([1, 17, 42], 12)))
    s1 = a.state
    return [first, s1, np.array(list(a.generate([3], 8))), a.state]


def _prefill_state_step(a, m):
    return [a.step(5), a.prefill([6, 7, 8, 9, 10, 11, 12]), a.state, a.step(13), a.state]


def _reset_prefill_step(a, m):
    a.step(5)
    a.reset()
    return [a.prefill([6, 7, 8]), a.step(9)]


def _batch_then_step(a, m):
    """Sequences in the device's own state slots (never through the state buffer), then a
    single step from the host's state."""
    prompts = [[1, 17, 42], [5], [9, 9, 9, 9], [3, 2], [56, 57, 58, 59, 60, 61, 62, 63]]
    greedy = np.array(list(a.generate_batch(prompts, 6)))
    sampled = np.array(list(a.generate_batch(prompts, 6, temperature=3.0, top_p=0.95, seed=4)))
    return [greedy, sampled, a.state, a.step(9), a.state]


#: name → what the user does; every value returned is compared with the C-simulation.
#: The first seven are the review's scenarios (pynq_check.md §4a), in its order.
SCENARIOS = {
    "step_step": lambda a, m: [a.step(5), a.step(6)],
    "reset_then_state": _steps_then_reset_then_state,
    "reset_state_step": _reset_state_step,
    "reset_execute_step": _reset_execute_step,
    "execute_then_state": _execute_then_state,
    "execute_state_step": _execute_state_step,
    "execute_step": _execute_step,
    "execute_from_given_state": _execute_from_given_state,
    "throughput_then_state": _throughput_then_state,
    "generate_twice": _generate_twice,
    "prefill_state_step": _prefill_state_step,
    "reset_prefill_step": _reset_prefill_step,
    "batch_then_step": _batch_then_step,
}


def _run(acc, model, scenario):
    with acc:
        return [np.asarray(v) for v in SCENARIOS[scenario](acc, model)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_write_back_cache_scenario_matches_csim(engine_package, board, scenario):
    path, model = engine_package
    want = _run(Accelerator.open(path, backend="csim"), model, scenario)
    got = _run(_open_board(path, board), model, scenario)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert board.lost_writes == [], "an invalidate discarded host writes that were never flushed"
    assert board.memory.violations == []
    assert all(bo.cacheable for bo in board.bos) and len(board.bos) == 5     # weights, x_in, state, logits, top


def test_the_cache_model_catches_an_invalidate_of_host_writes(engine_package, board, monkeypatch):
    """Strength of the fake: with the old discipline (invalidate without flushing host writes
    first) the review's failing scenarios fail here too."""
    path, model = engine_package

    def naive_invalidate(self, names):
        return [n for n in names if getattr(self.arrays[n], "invalidate", None) and
                (self.arrays[n].invalidate() or True)]
    monkeypatch.setattr(DeviceBuffers, "invalidate", naive_invalidate)
    failed = []
    for scenario in ("reset_then_state", "reset_state_step", "reset_execute_step",
                     "execute_then_state", "execute_state_step"):
        board.lost_writes.clear()
        want = _run(Accelerator.open(path, backend="csim"), model, scenario)
        got = _run(_open_board(path, board), model, scenario)
        if any(not np.array_equal(g, w) for g, w in zip(got, want)):
            failed.append(scenario)
            assert board.lost_writes, scenario
    assert failed == ["reset_then_state", "reset_state_step", "reset_execute_step",
                      "execute_then_state", "execute_state_step"]


# ------------------------------------------------------------------ overlay, registers, buffers
def test_overlay_loads_through_pynq_and_the_register_map_agrees(engine_package, board):
    path, _ = engine_package
    spec = BOARDS[engine_package.board]
    acc = _open_board(path, board)
    with acc:
        overlay = acc.backend.overlay
        regs = overlay.ip_dict["mmfree_0"]["registers"]
        ip = acc.manifest.data["ip"]
        got = {n: r["address_offset"] for n, r in regs.items()}
        assert got == expected_hwh_registers(ip)                 # every one, by pynq's own parser
        assert len(got) == 4 + 1 + 5 + 2 * (4 + spec["K"])      # control, ap_return, scalars, pointers
        assert got["ap_return"] == 0x10 and got[f"w{spec['K'] - 1}_2"] == 0x74 + 12 * (spec["K"] - 1)
        assert [got[a] for a in ("n", "mode", "slot", "load_mask", "store_mask", "x_in_1", "top_2")] == \
            [0x18, 0x20, 0x28, 0x30, 0x38, 0x40, 0x68]
        assert overlay.ip_dict["mmfree_0"]["phys_addr"] == board.IP_BASE
        windows = acc.backend.windows                          # the masters' DDR windows, from the .hwh
        assert sorted(windows) == sorted(["m_axi_gmem_io", "m_axi_gmem_out"]
                                         + [f"m_axi_gmem_w{k}" for k in range(spec["K"])])
        ddr = {"zynq_ultra": 0x8000_0000, "zynq7": 0x2000_0000}[spec["ps"]]
        assert all(w == [(0, ddr)] for w in windows.values())
        assert ("/sys/class/fpga_manager/fpga0/firmware", "engine.bin") in board.fpga_manager
        # PL clock programmed as the .hwh says (Zynq-7000: only through load_overlay's fill-in)
        assert board.pl_clock_mhz(0) == pytest.approx(spec["mhz"], abs=0.01)
        assert isinstance(acc.backend.mmio, pynq.MMIO)
        assert type(acc._buffers["logits"]).__name__ == "PynqBuffer"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_fixture_wires_the_masters_as_the_block_design_does(name):
    """The .hwh's masters reach the PS ports the project's Vivado rule picks (none coherent)."""
    from pynqmetadata import ManagerPort
    from pynqmetadata.frontends import Metadata

    from mmfree_hls.design.synth import port_plan
    from mmfree_hls.runtime.manifest import known_boards

    core = Metadata(input=str(BOARDS[name]["hwh"])).blocks["mmfree_0"]
    wired = {p.name: {p._addrmap_obj[k].name for k in p.addrmap}
             for p in core.ports.values() if isinstance(p, ManagerPort)}
    facts = known_boards()[name]
    plan = port_plan(sorted(wired), facts["engine"]["streamed"], facts)
    assert wired == {m: {port} for m, port in plan.items()}
    assert not any("ACP" in port for port in plan.values())


def test_buffers_are_cacheable_and_every_pointer_is_written(engine_package, board):
    path, model = engine_package
    acc = _open_board(path, board)
    with acc:
        bos = _bos(board, acc)
        assert {n: bo.cacheable for n, bo in bos.items()} == dict.fromkeys(bos, True)
        r = acc.manifest.data["ip"]["registers"]
        for name in ("x_in", "state", "logits", "top"):
            assert board.regs.pointer(r[name]["offset"]) == bos[name].paddr
        region = acc.manifest.data["ip"]["region_bytes"]
        for k in range(BOARDS[engine_package.board]["K"]):
            assert board.regs.pointer(r[f"w{k}"]["offset"]) == (
                bos["weights"].paddr + acc.manifest.data["ip"]["region_offset"] + k * region)
        acc.step(3)
        # The IP gathered the weight image from its K regions: flushed, and addressed right.
        np.testing.assert_array_equal(board.engine.weights_seen, acc.manifest.packed_weights())
        # What the user gets are plain arrays, not views that claim a physical address.
        assert type(acc.step(5)) is np.ndarray and type(acc.state) is np.ndarray


def test_per_token_host_actions(engine_package, board):
    """One token = 2 flushes, the 5 scalars of a single-sequence pass, 1 CTRL write, CTRL reads
    until done, 1 ap_return read, 2 invalidates."""
    path, _ = engine_package
    acc = _open_board(path, board)
    with acc:
        acc.step(5)
        names = {bo.paddr: n for n, bo in _bos(board, acc).items()}
        board.log.clear()
        acc.step(6)
        events = [(e[0], names.get(e[2], e[2]) if e[0] == "sync" else e[1:]) for e in board.log]
    to, back = "to_device", "from_device"
    assert [e for e in events if e[0] == "sync"] == [("sync", "x_in"), ("sync", "state"),
                                                      ("sync", "state"), ("sync", "logits")]
    assert [board.log[i][1] for i, e in enumerate(events) if e[0] == "sync"] == [to, to, back, back]
    regs = [e for e in events if e[0] in ("read", "write")]
    # n = 1 lane, mode = HEAD | FULL_LOGITS, slot 0, its state loaded and stored
    scalars = [("write", (0x18, 1)), ("write", (0x20, 6)), ("write", (0x28, 0)), ("write", (0x30, 1)),
               ("write", (0x38, 1))]
    assert regs == [("read", (0,))] + scalars + [("write", (0, 1)), ("read", (0,)), ("read", (0x10,))]
    assert not any(e[0] == "write" and e[1][0] >= 0x40 for e in regs)   # no pointer rewrites per token


def test_buffers_outside_the_masters_ddr_window_are_refused(engine_package, tmp_path, monkeypatch):
    """A CMA pool above the address window the .hwh maps for the IP's masters: refused at open,
    naming buffer, window and master, and nothing is left allocated."""
    path, _ = engine_package
    spec = BOARDS[engine_package.board]
    high = FakeBoard(tmp_path, spec["ps"], cma_base=0x8_0000_0000).install(monkeypatch)
    with pytest.raises(AcceleratorError, match=r"buffer '\w+' at 0x800000000-.* lies outside the DDR "
                                               r"window 0x0-0x[0-9a-f]+ that the IP's m_axi_gmem_\w+ reaches"):
        _open_board(path, high)
    assert high.bos and all(bo.released for bo in high.bos)


def test_mmio_refuses_numpy_integers_like_the_fake(board):
    from pynq import MMIO
    mmio = MMIO(board.IP_BASE, 0x10000)
    with pytest.raises(ValueError, match="int or bytes"):
        mmio.write(0x18, np.uint32(5))
    with pytest.raises(ValueError, match="int or bytes"):
        FakeMMIO().write(0x18, np.uint32(5))
    with pytest.raises(MemoryError):
        FakeMMIO().write(0x1a, 5)
    mmio.write(0x18, 5)
    assert mmio.read(0x18) == 5 and type(mmio.read(0x18)) is int


# ------------------------------------------------------------------ the register map check fails loudly
def _mutated_registers(tmp_path, edit):
    """pynq's parser on a copy of the fixture .hwh with one register edited."""
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    tree = ET.parse(HWH)
    regs = next(m for m in tree.iter("MODULE") if m.get("INSTANCE") == "mmfree_0").find(".//REGISTERS")
    edit(regs)
    out = tmp_path / "mutated.hwh"
    tree.write(out, encoding="UTF-8", xml_declaration=True)
    return RuntimeMetadataParser(Metadata(input=str(out))).ip_dict["mmfree_0"]["registers"]


def _offset(regs, name, value):
    reg = next(r for r in regs if r.get("NAME") == name)
    next(p for p in reg.findall("PROPERTY") if p.get("NAME") == "ADDRESS_OFFSET").set("VALUE", str(value))


def _drop(regs, name):
    regs.remove(next(r for r in regs if r.get("NAME") == name))


def _add_w4(regs):
    for half, off in (("w4_1", 0xA0), ("w4_2", 0xA4)):
        reg = ET.SubElement(regs, "REGISTER", NAME=half)
        ET.SubElement(reg, "PROPERTY", NAME="ADDRESS_OFFSET", VALUE=str(off))


@pytest.mark.parametrize("edit, message", [
    (lambda r: _drop(r, "w3_2"), r"w3_2 missing \(expected at 0x98\)"),
    (lambda r: _drop(r, "slot"), r"slot missing \(expected at 0x28\)"),
    (lambda r: _offset(r, "store_mask", 0x3c), r"store_mask at 0x3c, the manifest says 0x38"),
    (lambda r: _drop(r, "top_1"), r"top_1 missing \(expected at 0x64\)"),
    (lambda r: _drop(r, "state_2"), r"state_2 missing"),
    (lambda r: _offset(r, "CTRL", 4), r"CTRL at 0x4, the manifest says 0x0"),
    (lambda r: _drop(r, "ap_return"), r"ap_return missing \(expected at 0x10\)"),
    (lambda r: _offset(r, "logits_1", 0x54), r"logits_1 at 0x54, the manifest says 0x58"),
    (lambda r: _offset(r, "GIER", 0x8), r"GIER at 0x8"),
    (_add_w4, r"w4_1 at 0xa0 is not in the manifest.*w4_2 at 0xa4 is not in the manifest"),
])
@pytest.mark.parametrize("engine_package", ["zcu104"], indirect=True)
def test_register_map_check_fails_on_every_mismatch(engine_package, tmp_path, edit, message):
    path, _ = engine_package
    m = load_manifest(path)
    registers = _mutated_registers(tmp_path, edit)
    with pytest.raises(ManifestError, match=message):
        PynqBackend(m.data["ip"], m.layout, mmio=FakeMMIO()).check_register_map(registers)
    PynqBackend(m.data["ip"], m.layout, mmio=FakeMMIO()).check_register_map(
        _mutated_registers(tmp_path, lambda r: None))          # the fixture itself passes


@pytest.mark.parametrize("engine_package", ["zcu104"], indirect=True)
def test_open_refuses_a_bitstream_whose_hwh_disagrees(engine_package, board, tmp_path):
    path, _ = engine_package
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    text = (bad / "engine.hwh").read_text().replace('NAME="w1_2"', 'NAME="w1_hi"')
    (bad / "engine.hwh").write_text(text)
    data = json.loads((bad / "manifest.json").read_text())
    write_manifest(bad, data)                 # re-hash: the package is consistent, the IP is not
    _device_model(bad, board)
    with pytest.raises(ManifestError, match="w1_2 missing.*w1_hi at 0x80 is not in the manifest"):
        Accelerator.open(bad, backend="pynq")


# ------------------------------------------------------------------ timeouts, ap_return, close()
def test_timeout_then_recovery_matches_csim(engine_package, board):
    path, model = engine_package
    with Accelerator.open(path, backend="csim") as ref:
        want = [ref.step(5), ref.step(6), ref.step(7)]
    acc = _open_board(path, board, timeout_s=0.05)
    with acc:
        acc.step(5)
        acc.step(6)
        board.regs.hang = 1
        with pytest.raises(DeviceTimeoutError, match="did not finish"):
            acc.step(7)
        board.regs.finish_hung_step()           # the slow step ends; its writes are replaced
        np.testing.assert_array_equal(acc.step(7), want[2])
        np.testing.assert_array_equal(acc.state, _csim_state(path, [5, 6, 7]))
    assert board.lost_writes == [] and board.memory.violations == []


def _csim_state(path, tokens):
    with Accelerator.open(path, backend="csim") as ref:
        for t in tokens:
            ref.step(t)
        return ref.state


def test_nonzero_ap_return_is_reported(engine_package, board):
    path, _ = engine_package
    acc = _open_board(path, board)
    with acc:
        with pytest.raises(AcceleratorError, match="returned 7"):
            acc.step(FAIL_TOKEN)
        acc.reset()
        np.testing.assert_array_equal(acc.step(5), Accelerator.open(path, backend="csim").step(5))


def test_close_frees_every_buffer_when_idle(engine_package, board):
    path, _ = engine_package
    acc = _open_board(path, board)
    acc.step(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        acc.close()
    assert all(bo.released for bo in board.bos)
    assert board.memory.live == {}


def test_close_waits_for_a_slow_step_then_frees(engine_package, board):
    path, _ = engine_package
    acc = _open_board(path, board, timeout_s=0.05)
    acc.step(5)
    board.regs.hang = 1
    with pytest.raises(DeviceTimeoutError):
        acc.step(6)
    board.regs.finish_after_reads = 50          # the IP finishes while close() waits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        acc.close()
    assert all(bo.released for bo in board.bos)
    assert board.memory.violations == []


def test_close_after_a_hang_leaks_the_buffers_and_says_so(engine_package, board):
    path, _ = engine_package
    acc = _open_board(path, board, timeout_s=0.05)
    acc.step(5)
    board.regs.hang = 1
    with pytest.raises(DeviceTimeoutError):
        acc.step(6)
    with pytest.warns(BufferLeakWarning, match="still running.*5 buffers.*stay allocated"):
        acc.close()
    assert not any(bo.released for bo in board.bos)      # nothing handed back to the kernel
    board.regs.finish_hung_step()                         # the IP's late writes land in its own buffers
    assert board.memory.violations == []
