"""Synthesis flow: Vitis HLS (C simulation, C synthesis, IP export) and Vivado (block design → bitstream).

The Tcl is rendered from templates in ``design/tcl/``. The generators take a
project record (``mmfree_project.json``: top, tier, board, sources,
include_dirs, cflags) and a board preset (``boards.json[board]["engine"][tier]``),
so they do not depend on how the engine is written. PS port facts come from
``design/tcl/ps_ports.json``, tool releases and IP naming from
``data/toolchain.json``. The scripts are always written (they can be read,
dry-run under ``tclsh`` and run by hand); the vendor tools run only when found
on PATH, otherwise the flow stops at once naming the tool and the release the
scripts target.

Layout under an HLS project (``hls_project/NAME``)::

    synth/<board>/vitis_hls.tcl     C simulation, C synthesis, co-simulation (optional), IP export
    synth/<board>/vitis_hls_prj/    Vitis HLS project (IP under solution1/impl/ip)
    synth/<board>/vivado_bd.tcl     block design, implementation, timing gate, reports
    synth/<board>/vivado_prj/       Vivado project
    synth/<board>/NAME.bit, NAME.hwh   → picked up by `mmfree package`
    synth/<board>/reports/          csynth.rpt/xml, utilization.rpt, timing_summary.rpt, timing.json, impl.json
    synth/<board>/tools.json        tool versions that produced the above

Standard library only (no TensorFlow, no numpy): ``mmfree synth`` works with
the runtime install plus the vendor tools.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..hls_project import read_project
from ..runtime.manifest import known_boards

TEMPLATE_DIR = Path(__file__).resolve().parent / "tcl"
_TOOLCHAIN_JSON = Path(__file__).resolve().parent.parent / "data" / "toolchain.json"
_PS_PORTS_JSON = TEMPLATE_DIR / "ps_ports.json"
_PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")
TIERS = ("on-chip", "streamed")


class ToolMissingError(RuntimeError):
    """A vendor tool the step needs is not on PATH."""


class SynthError(RuntimeError):
    """A vendor tool ran and failed, or its inputs are missing."""


def toolchain() -> dict:
    return json.loads(_TOOLCHAIN_JSON.read_text())


def ps_ports() -> dict:
    return {k: v for k, v in json.loads(_PS_PORTS_JSON.read_text()).items() if not k.startswith("_")}


def board_facts(board: str) -> dict:
    """The board's entry of data/boards.json, checked for what the block design needs."""
    boards = known_boards()
    if board not in boards:
        raise ValueError(f"unknown board {board!r}; choose one of {', '.join(sorted(boards))} "
                         "(data/boards.json)")
    facts = dict(boards[board])
    ps = toolchain()["ps"]
    if facts.get("ps") not in ps:
        flow = (facts.get("engine") or {}).get("flow")
        raise ValueError(f"board {board!r} has PS type {facts.get('ps')!r}: the Vivado block design "
                         f"supports {sorted(ps)} (Zynq boards for PYNQ)" + (f"; boards.json: {flow}" if flow else ""))
    return facts


def board_preset(board: str, tier: str) -> dict:
    """``boards.json[board]["engine"][tier]`` with the PS family's defaults filled in.

    The on-chip tier has no weight ports; its one m_axi bundle (gmem_io) still gets the
    family's port width, 16-beat bursts and outstanding count. The probe uses the streamed
    tier's preset (same ports, width and clock as the engine it measures for).
    """
    facts = board_facts(board)
    key = "streamed" if tier == "probe" else tier
    if key not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    engine = facts.get("engine") or {}
    if key not in engine:
        raise ValueError(f"data/boards.json: board {board!r} has no engine preset for the {key} tier "
                         f"(boards.json[{board!r}]['engine'][{key!r}])")
    fam = ps_ports()[facts["ps"]]
    preset = dict(engine[key])
    preset.setdefault("ports", [])
    preset.setdefault("port_bits", fam["family_port_bits"])
    preset.setdefault("burst_beats", 16)
    preset.setdefault("outstanding", fam["outstanding"])
    for field in ("clock_mhz",):
        if field not in preset:
            raise ValueError(f"data/boards.json: {board!r} engine preset {key!r} has no {field!r}")
    return preset


# ---------------------------------------------------------------- Tcl rendering
def tcl_word(value) -> str:
    """One Tcl word: braces keep spaces and $ literal; lists become [list ...]."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[list " + " ".join(tcl_word(v) for v in value) + "]" if value else "[list]"
    if isinstance(value, dict):
        return "[dict create " + " ".join(f"{tcl_word(k)} {tcl_word(v)}" for k, v in value.items()) + "]"
    s = str(value)
    if "{" in s or "}" in s or "\\" in s or "\n" in s:
        raise ValueError(f"cannot put {s!r} into Tcl safely (braces, backslashes or newlines)")
    return "{" + s + "}"


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill @@NAME@@ placeholders; every placeholder must be given, every value used."""
    text = (TEMPLATE_DIR / template).read_text()
    used = set(_PLACEHOLDER.findall(text))
    missing, unused = used - set(values), set(values) - used
    if missing or unused:
        raise KeyError(f"{template}: placeholders without value {sorted(missing)}, "
                       f"values without placeholder {sorted(unused)}")

    def fill(line: str) -> str:
        # In comments a value is prose, not a Tcl word.
        word = (lambda v: str(v).replace("\n", " ")) if line.lstrip().startswith("#") else tcl_word
        return _PLACEHOLDER.sub(lambda m: word(values[m.group(1)]), line)

    return "".join(fill(line) for line in text.splitlines(keepends=True))


# ----------------------------------------------------------------- project record
def record_tier(record: Mapping) -> str:
    tier = record.get("tier", "on-chip")
    if tier not in (*TIERS, "probe"):
        raise ValueError(f"mmfree_project.json: tier {tier!r} is not one of {TIERS}")
    return tier


def io_port(preset: Mapping, facts: Mapping) -> str:
    """The PS slave port of the per-token I/O bundles (gmem_io, gmem_out): the first port of the PS
    family's ``io_port_preference`` that no weight bundle uses (why: ps_ports.json ``io_port_why``)."""
    weights = list(preset.get("ports") or [])
    free = [p for p in ps_ports()[facts["ps"]]["io_port_preference"] if p not in weights]
    if not free:
        raise ValueError(f"no PS port left for the I/O bundles: the preset's weight ports are {weights}")
    return free[0]


def port_plan(masters: Sequence[str], preset: Mapping, facts: Mapping) -> dict[str, str]:
    """m_axi master pin (``m_axi_<bundle>``) → the PS slave port it is wired to.

    The rule the Vivado script applies once it has counted the IP's masters: weight bundle
    ``gmem_w<k>`` goes to the preset's k-th port (the preset chose ports on distinct DDR-controller
    ports), every other bundle (gmem_io, gmem_out) to :func:`io_port`, shared through one SmartConnect.
    """
    weights = list(preset.get("ports") or [])
    plan: dict[str, str] = {}
    for master in masters:
        m = re.fullmatch(r"m_axi_gmem_w(\d+)", master)
        if m is None:
            plan[master] = io_port(preset, facts)
        elif int(m.group(1)) < len(weights):
            plan[master] = weights[int(m.group(1))]
        else:
            raise ValueError(f"m_axi bundle {master!r} has no PS port in the board preset "
                             f"(ports {weights}); weight bundles are gmem_w0..gmem_w{len(weights) - 1}")
    return plan


def _project_paths(root: Path, record: Mapping, key: str, fallback: str = "") -> list[Path]:
    items = record.get(key) or (record.get(fallback) if fallback else None) or []
    return [root / s for s in items]


def hls_sources(root: Path, record: Mapping) -> tuple[list[Path], list[Path], list[Path]]:
    """Synthesis sources, include directories and testbench files of a project record."""
    sources = _project_paths(root, record, "sources", "hls_sources")
    includes = _project_paths(root, record, "include_dirs", "hls_include_dirs")
    testbench = _project_paths(root, record, "testbench")
    missing = [s for s in sources + testbench if not s.is_file()]
    if not sources or missing:
        raise FileNotFoundError(f"{root}: synthesis sources missing "
                                f"({[str(m) for m in missing] or 'mmfree_project.json lists no sources'}); "
                                "re-run `mmfree convert`")
    return sources, includes, testbench


def synth_dir(project: str | Path, board: str) -> Path:
    return Path(project) / "synth" / board


def ip_vlnv(top: str) -> str:
    ip = toolchain()["hls_ip"]
    return f"{ip['vendor']}:{ip['library']}:{top}:{ip['version']}"


def _top(record: Mapping) -> str:
    top = record.get("top")
    if not top:
        raise ValueError("mmfree_project.json has no 'top' (the HLS top function, e.g. mmfree_engine)")
    return top


# ----------------------------------------------------------------- generators
def hls_tcl(record: Mapping, preset: Mapping, facts: Mapping, *, root: Path, out_dir: Path,
            board: str, csim: Optional[bool] = None, cosim: bool = False) -> str:
    """Vitis HLS Tcl for one project record and board preset.

    C simulation runs when the record names a testbench (``testbench``); co-simulation
    (``cosim``) needs one too.
    """
    sources, includes, testbench = hls_sources(root, record)
    if cosim and not testbench:
        raise ValueError("co-simulation (COSIM=1) needs a C testbench: mmfree_project.json lists no "
                         "'testbench' files")
    extra = record.get("cflags") or ""
    extra = " ".join(extra) if isinstance(extra, (list, tuple)) else str(extra)
    cflags = " ".join(["-std=c++14", *(f"-I{i}" for i in includes), extra.strip()]).strip()
    tools, ip = toolchain()["tools"], toolchain()["hls_ip"]
    return render("vitis_hls.tcl.in", {
        "TOOL_VERSION": tools["vitis_hls"]["version"],
        "NAME": record.get("name") or root.name, "TOP": _top(record), "TIER": record_tier(record),
        "BOARD": board, "PART": facts["part"], "CLOCK_MHZ": preset["clock_mhz"],
        "SOURCES": [str(s) for s in sources], "TESTBENCH": [str(t) for t in testbench],
        "CSIM_ARGV": " ".join(record.get("csim_argv") or []), "CFLAGS": cflags,
        "OUT_DIR": str(out_dir), "IP_VENDOR": ip["vendor"], "IP_LIBRARY": ip["library"],
        "IP_VERSION": ip["version"], "PORT_BITS": int(preset["port_bits"]),
        "BURST_BEATS": int(preset["burst_beats"]), "OUTSTANDING": int(preset["outstanding"]),
        "RUN_CSIM": bool(testbench) if csim is None else bool(csim), "RUN_COSIM": bool(cosim)})


def bd_tcl(record: Mapping, preset: Mapping, facts: Mapping, *, name: str, board: str, out_dir: Path,
           ip_repo: Path, part_only: bool = False, allow_timing_violation: bool = False,
           jobs: Optional[int] = None) -> str:
    """Vivado block-design Tcl for one project record and board preset."""
    tc = toolchain()
    ps, ip = tc["ps"][facts["ps"]], tc["hls_ip"]
    fam = ps_ports()[facts["ps"]]
    control = facts.get("control_port")
    if control not in fam["masters"]:
        raise ValueError(f"data/boards.json: board {board!r} control_port {control!r} is not a "
                         f"{facts['ps']} master port ({sorted(fam['masters'])})")
    weights = list(preset.get("ports") or []) if record_tier(record) != "on-chip" else []
    used = sorted(set(weights) | ({io_port(preset, facts)} if record_tier(record) != "probe" else set()))
    unknown = [p for p in used if p not in fam["slaves"]]
    if unknown:
        raise ValueError(f"data/boards.json: PS ports {unknown} are not {facts['ps']} slave ports "
                         f"({sorted(p for p, s in fam['slaves'].items() if 'width' in s)})")
    widthless = [p for p in used if "width" not in fam["slaves"][p]]
    if widthless:
        raise ValueError(f"PS ports {widthless} cannot carry an m_axi bundle (use HP/HPC ports)")
    if int(preset["port_bits"]) != fam["family_port_bits"]:
        raise ValueError(f"board preset port_bits {preset['port_bits']} differs from the {facts['ps']} "
                         f"PS port width {fam['family_port_bits']}: the weight ports must match the PS ports")
    base = {ps["pl_clock_property"]: preset["clock_mhz"], **fam["pl_clock_enable"]}
    for port, m in fam["masters"].items():
        base[m["enable"]] = 1 if port == control else 0
    for port, s in fam["slaves"].items():
        base[s["enable"]] = 0
    return render("vivado_bd.tcl.in", {
        "TOOL_VERSION": tc["tools"]["vivado"]["version"],
        "NAME": name, "BOARD": board, "TIER": record_tier(record), "PART": facts["part"],
        "BOARD_PART": facts.get("board_part", ""), "BOARD_CONNECTIONS": facts.get("board_connections", ""),
        "PART_ONLY": bool(part_only), "CLOCK_MHZ": preset["clock_mhz"],
        "IP_REPO": str(ip_repo), "IP_VLNV": ip_vlnv(_top(record)), "IP_INSTANCE": ip_instance(record),
        "IP_CONTROL": f"s_axi_{ip['control_bundle']}",
        "PS_FAMILY": facts["ps"], "PS_VLNV": ps["vlnv"], "PS_RULE": ps["preset_rule"],
        "PS_BASE_PROPS": base, "PS_CLOCK_ACTUAL": fam["pl_clock_actual_property"],
        "PL_CLOCK_PIN": fam["pl_clock_pin"], "PL_RESET_PIN": fam["pl_reset_pin"],
        "CONTROL_PORT": control, "CONTROL_CLOCK_PIN": fam["masters"][control]["clock_pin"],
        "WEIGHT_PORTS": weights, "IO_PORT": io_port(preset, facts),
        "PORT_ENABLE": {p: fam["slaves"][p]["enable"] for p in used},
        "PORT_WIDTH": {p: fam["slaves"][p]["width"] for p in used},
        "PORT_CLOCK": {p: fam["slaves"][p]["clock_pin"] for p in used},
        "PORT_SEGMENTS": {p: fam["slaves"][p]["ddr_segments"] for p in used},
        "PORT_BITS": int(preset["port_bits"]), "OUT_DIR": str(out_dir),
        "JOBS": int(jobs or max(1, (os.cpu_count() or 2) // 2)),
        "ALLOW_TIMING_VIOLATION": bool(allow_timing_violation)})


def ip_instance(record: Mapping) -> str:
    """Block-design instance name of the IP: toolchain's ``mmfree_0`` for the engine, ``<top>_0`` otherwise."""
    ip = toolchain()["hls_ip"]
    return record.get("ip_instance") or (ip["instance"] if record.get("top", "").startswith("mmfree") else
                                         f"{record['top']}_0")


# ----------------------------------------------------------------- writers (project on disk)
def _load(project: str | Path, board: str, tier: Optional[str]) -> tuple[Path, dict, dict, dict]:
    facts = board_facts(board)
    root = Path(project).resolve()
    record = read_project(root)
    have = record_tier(record)
    if tier is not None and tier != have:
        raise ValueError(f"{root} was generated for the {have} tier, not {tier}: build it as it is with "
                         f"TIER={have} (--tier {have}), or convert it again for {tier} with "
                         f"`mmfree convert CKPT --board {board} --tier {tier} --out {project}`")
    if record.get("board") and record["board"] != board:
        raise ValueError(f"{root} was generated for board {record['board']!r}, not {board!r}: its sizes "
                         f"follow that board's preset; convert again with --board {board}")
    return root, record, facts, board_preset(board, have)


def write_hls_tcl(project: str | Path, board: str, tier: Optional[str] = None, cosim: bool = False) -> Path:
    """Render ``synth/<board>/vitis_hls.tcl`` for a project."""
    root, record, facts, preset = _load(project, board, tier)
    out = synth_dir(root, board)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vitis_hls.tcl"
    path.write_text(hls_tcl(record, preset, facts, root=root, out_dir=out, board=board, cosim=cosim))
    return path


def write_bd_tcl(project: str | Path, board: str, tier: Optional[str] = None, jobs: Optional[int] = None,
                 part_only: bool = False, allow_timing_violation: bool = False) -> Path:
    """Render ``synth/<board>/vivado_bd.tcl`` (block design → bitstream + .hwh)."""
    root, record, facts, preset = _load(project, board, tier)
    out = synth_dir(root, board)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vivado_bd.tcl"
    path.write_text(bd_tcl(record, preset, facts, name=record.get("name") or root.name, board=board,
                           out_dir=out, ip_repo=out / "vitis_hls_prj" / "solution1" / "impl" / "ip",
                           part_only=part_only, allow_timing_violation=allow_timing_violation, jobs=jobs))
    return path


# ----------------------------------------------------------------- reports
def _number(text: Optional[str], kind=float):
    try:
        return kind(float(text)) if text not in (None, "", "-") else None
    except ValueError:
        return None


def parse_csynth_xml(xml_path: str | Path) -> dict:
    """Top, part, clocks, latency and resources of a Vitis HLS ``<top>_csynth.xml`` (the one parser:
    :func:`mmfree_hls.engine.reports.parse_csynth_report`), as the summary ``make hls`` writes."""
    from ..engine.reports import ReportError, parse_csynth_report
    try:
        rep = parse_csynth_report(xml_path)
    except ReportError as e:
        raise SynthError(str(e)) from None
    return {"top": rep.top, "part": rep.part, "target_clock_ns": rep.target_clock_ns,
            "estimated_clock_ns": rep.estimated_clock_ns, "latency_cycles": rep.latency_worst,
            "interval_cycles": rep.interval_max, "resources": rep.resources, "available": rep.available,
            "source": "vitis_hls_report"}


def report_summary(project: str | Path, board: str) -> dict:
    """The copied csynth report of a project, summarised into ``reports/summary.json``."""
    record = read_project(project)
    reports = synth_dir(project, board) / "reports"
    xml = reports / f"{_top(record)}_csynth.xml"
    if not xml.is_file():
        xml = reports / "csynth.xml"
    summary = parse_csynth_xml(xml)
    (reports / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# report_utilization rows -> our resource names. BRAM: Vivado counts 36 Kb tiles (RAMB18 = 0.5).
_UTIL_ROWS = {"Slice LUTs": "LUT", "CLB LUTs": "LUT", "Slice Registers": "FF", "CLB Registers": "FF",
              "Block RAM Tile": "BRAM_36K", "URAM": "URAM", "DSPs": "DSP"}


def parse_utilization(text: str) -> dict:
    """Used and available LUT/FF/BRAM_18K/URAM/DSP from a ``report_utilization`` text report.

    Reads the tables by their header row (``Site Type | Used | ... | Available | Util%``), so it
    holds for 7-series (Slice LUTs) and UltraScale+ (CLB LUTs), with or without the Prohibited column.
    """
    used: dict = {}
    avail: dict = {}
    header: Optional[list[str]] = None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "Site Type":
            header = cells
            continue
        if header is None or cells[0] not in _UTIL_ROWS or len(cells) != len(header):
            continue
        key = _UTIL_ROWS[cells[0]]
        if key in used:            # first table that names it wins (the summary tables come first)
            continue
        row = dict(zip(header, cells))
        used[key] = _number(row.get("Used"))
        avail[key] = _number(row.get("Available"))
    if "LUT" not in used:
        raise SynthError("not a Vivado report_utilization report: no 'Slice LUTs' / 'CLB LUTs' row")
    for d in (used, avail):
        if d.get("BRAM_36K") is not None:
            d["BRAM_18K"] = int(round(2 * d.pop("BRAM_36K")))
        else:
            d.pop("BRAM_36K", None)
        d.setdefault("URAM", 0)
        for k, v in list(d.items()):
            if isinstance(v, float) and v.is_integer():
                d[k] = int(v)
    return {"resources": used, "available": avail}


def parse_timing_summary(text: str) -> dict:
    """WNS/TNS/WHS/THS (ns) and the clock table from a ``report_timing_summary`` text report."""
    lines = text.splitlines()
    out: dict = {}
    for i, line in enumerate(lines):
        if "WNS(ns)" in line and "WHS(ns)" in line and not out:
            names = re.split(r"\s{2,}", line.strip())       # columns are two or more spaces apart
            for nxt in lines[i + 1:i + 4]:
                vals = nxt.split()
                if vals and all(re.fullmatch(r"-?[\d.]+|NA", v) for v in vals) and len(vals) == len(names):
                    row = dict(zip(names, vals))
                    out = {"wns_ns": _number(row.get("WNS(ns)")), "tns_ns": _number(row.get("TNS(ns)")),
                           "whs_ns": _number(row.get("WHS(ns)")), "ths_ns": _number(row.get("THS(ns)"))}
                    break
    if not out:
        raise SynthError("not a Vivado report_timing_summary report: no 'Design Timing Summary' figures")
    clocks = {}
    for i, line in enumerate(lines):
        if line.split()[:4] == ["Clock", "Waveform(ns)", "Period(ns)", "Frequency(MHz)"]:
            for row in lines[i + 2:]:
                parts = row.split()
                if not parts or not re.fullmatch(r"[\d.]+", parts[-1]) or len(parts) < 4:
                    break
                clocks[parts[0]] = {"period_ns": float(parts[-2]), "frequency_mhz": float(parts[-1])}
            break
    out["clocks"] = clocks
    out["timing_met"] = (out["wns_ns"] or 0) >= 0 and (out["whs_ns"] or 0) >= 0
    return out


def parse_impl_reports(reports_dir: str | Path, clock_mhz: Optional[float] = None) -> dict:
    """Post-implementation figures for the overlay manifest: resources, Fmax, timing, source ``vivado_impl``.

    Reads ``utilization.rpt`` and ``timing_summary.rpt`` (and ``timing.json``, written by the
    Vivado script, for the clock and whether a violation was allowed). Fmax is the clock the
    design would close at: 1000 / (period - WNS).
    """
    d = Path(reports_dir)
    util_f, timing_f = d / "utilization.rpt", d / "timing_summary.rpt"
    for f in (util_f, timing_f):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: run `make overlay` (Vivado implementation) first")
    util = parse_utilization(util_f.read_text())
    timing = parse_timing_summary(timing_f.read_text())
    gate = json.loads((d / "timing.json").read_text()) if (d / "timing.json").is_file() else {}
    clock = clock_mhz or gate.get("clock_mhz")
    if clock is None and len(timing["clocks"]) == 1:
        clock = next(iter(timing["clocks"].values()))["frequency_mhz"]
    fmax = None
    if clock and timing["wns_ns"] is not None:
        fmax = round(1000.0 / (1000.0 / clock - timing["wns_ns"]), 1)
    out = {"source": "vivado_impl", **util, "clock_mhz": clock, "fmax_mhz": fmax,
           **{k: timing[k] for k in ("wns_ns", "tns_ns", "whs_ns", "ths_ns", "timing_met")},
           "timing_violation_allowed": bool(gate.get("violation_allowed")) and not timing["timing_met"]}
    return out


# ----------------------------------------------------------------- tools
def find_tool(key: str) -> Optional[str]:
    return shutil.which(toolchain()["tools"][key]["executable"])


def missing_tool_message(keys: Sequence[str], scripts: Sequence[Path], what: str) -> str:
    tools = toolchain()["tools"]
    names = ", ".join(f"{tools[k]['executable']} ({tools[k]['product']} {tools[k]['version']})" for k in keys)
    setup = "; ".join(tools[k]["setup"] for k in keys)
    run = " and ".join(str(s) for s in scripts)
    them = "them" if len(keys) > 1 else "it"
    return (f"{what} needs {names}: not found on PATH. Install {them} and `{setup}`, then re-run. "
            f"The Tcl was written to {run} for inspection or to run by hand. Everything else "
            "(C-simulation, `mmfree package`, `mmfree generate --backend csim`) works without it.")


def tool_version(executable: str) -> Optional[str]:
    """'2023.2' from ``vivado -version`` / ``vitis_hls -version``, None if unreadable."""
    try:
        text = subprocess.run([executable, "-version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"v(\d{4}\.\d)", text)
    return m.group(1) if m else None


def _record_tool(out: Path, key: str, version: Optional[str]) -> None:
    f = out / "tools.json"
    data = json.loads(f.read_text()) if f.is_file() else {}
    data[key] = version
    f.write_text(json.dumps(data, indent=2) + "\n")


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-20:]
        raise SynthError(f"{' '.join(cmd)} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail))


def _check_version(key: str, exe: str) -> Optional[str]:
    want = toolchain()["tools"][key]["version"]
    got = tool_version(exe)
    if got and got != want:
        print(f"warning: {exe} is {got}; the generated Tcl targets {want} (PS/IP versions may differ)")
    return got


def run_hls(project: str | Path, board: str, tier: Optional[str] = None, cosim: bool = False) -> dict:
    """Vitis HLS: C simulation (when the project has a testbench), csynth, optional cosim, IP export."""
    script = write_hls_tcl(project, board, tier=tier, cosim=cosim)
    exe = find_tool("vitis_hls")
    if exe is None:
        raise ToolMissingError(missing_tool_message(["vitis_hls"], [script], "`make hls` (C synthesis)"))
    out = script.parent
    _record_tool(out, "vitis_hls", _check_version("vitis_hls", exe))
    _run([exe, "-f", str(script)], cwd=out, log=out / "vitis_hls.log")
    return report_summary(project, board)


def run_overlay(project: str | Path, board: str, tier: Optional[str] = None, jobs: Optional[int] = None,
                part_only: bool = False, allow_timing_violation: bool = False) -> Path:
    """Vivado: block design → bitstream + .hwh in synth/<board>/ (runs HLS first if needed).

    Writes ``reports/impl.json`` (:func:`parse_impl_reports`) next to the bitstream.
    """
    hls_script = write_hls_tcl(project, board, tier=tier)
    bd_script = write_bd_tcl(project, board, tier=tier, jobs=jobs, part_only=part_only,
                             allow_timing_violation=allow_timing_violation)
    out = bd_script.parent
    ip_repo = out / "vitis_hls_prj" / "solution1" / "impl" / "ip"
    need_hls = not ip_repo.is_dir()
    missing = [k for k, needed in (("vitis_hls", need_hls), ("vivado", True)) if needed and not find_tool(k)]
    if missing:
        scripts = ([hls_script] if need_hls else []) + [bd_script]
        raise ToolMissingError(missing_tool_message(missing, scripts, "`make overlay` (bitstream)"))
    if need_hls:
        run_hls(project, board, tier=tier)
    exe = find_tool("vivado")
    _record_tool(out, "vivado", _check_version("vivado", exe))
    _run([exe, "-mode", "batch", "-nojournal", "-source", str(bd_script)], cwd=out, log=out / "vivado.log")
    name = read_project(project).get("name") or Path(project).resolve().name
    bit = out / f"{name}.bit"
    if not bit.is_file() or not (out / f"{name}.hwh").is_file():
        raise SynthError(f"Vivado finished but {bit} (and its .hwh) is missing; see {out / 'vivado.log'}")
    impl = parse_impl_reports(out / "reports")
    (out / "reports" / "impl.json").write_text(json.dumps(impl, indent=2) + "\n")
    return bit


def impl_summary(project: str | Path, board: str) -> Optional[dict]:
    """``synth/<board>/reports/impl.json`` of a project when `make overlay` wrote one, else None."""
    f = synth_dir(project, board) / "reports" / "impl.json"
    return json.loads(f.read_text()) if f.is_file() else None
