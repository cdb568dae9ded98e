"""Synthesis flow: Vitis HLS (C synthesis, IP export) and Vivado (block design → bitstream).

The Tcl is rendered from templates in ``design/tcl/`` with every board fact
taken from ``data/boards.json`` and every tool/PS fact from
``data/toolchain.json``. The scripts are always written (so they can be read,
tested with ``tclsh`` and run by hand); the vendor tools run only when found
on PATH, otherwise the flow stops at once naming the tool and the release the
scripts target.

Layout under an HLS project (``hls_project/NAME``)::

    synth/<board>/vitis_hls.tcl     C synthesis + IP export
    synth/<board>/vitis_hls_prj/    Vitis HLS project (IP under solution1/impl/ip)
    synth/<board>/vivado_bd.tcl     block design + implementation
    synth/<board>/vivado_prj/       Vivado project
    synth/<board>/NAME.bit, NAME.hwh   → picked up by `mmfree package`
    synth/<board>/reports/          csynth.rpt/xml, utilization, timing
    synth/<board>/tools.json        tool versions that produced the above

Only the standard library is used here (no TensorFlow): ``mmfree synth``
works with the runtime install plus the vendor tools.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..hls_project import read_project
from ..runtime.manifest import known_boards

TEMPLATE_DIR = Path(__file__).resolve().parent / "tcl"
_TOOLCHAIN_JSON = Path(__file__).resolve().parent.parent / "data" / "toolchain.json"
_PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")


class ToolMissingError(RuntimeError):
    """A vendor tool the step needs is not on PATH."""


class SynthError(RuntimeError):
    """A vendor tool ran and failed, or its inputs are missing."""


def toolchain() -> dict:
    return json.loads(_TOOLCHAIN_JSON.read_text())


def board_facts(board: str) -> dict:
    """The board's entry of data/boards.json, checked for what the block design needs."""
    boards = known_boards()
    if board not in boards:
        raise ValueError(f"unknown board {board!r}; choose one of {', '.join(sorted(boards))} "
                         "(data/boards.json)")
    facts = dict(boards[board])
    ps = toolchain()["ps"]
    if facts.get("ps") not in ps:
        raise ValueError(f"board {board!r} has PS type {facts.get('ps')!r}: the Vivado block design "
                         f"supports {sorted(ps)} (Zynq boards for PYNQ)")
    return facts


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


# ----------------------------------------------------------------- HLS project
def hls_sources(root: Path, info: Mapping) -> tuple[list[Path], list[Path]]:
    """Synthesis sources and include directories of a project.

    The project states them (``hls_sources`` / ``hls_include_dirs`` in
    mmfree_project.json); an hls4ml project without that record falls back to
    ``firmware/*.cpp`` with ``firmware/`` included.
    """
    if info.get("hls_sources"):
        sources = [root / s for s in info["hls_sources"]]
    else:
        sources = sorted((root / "firmware").glob("*.cpp"))
    includes = [root / s for s in info.get("hls_include_dirs", ["firmware"])]
    missing = [s for s in sources if not s.is_file()]
    if not sources or missing:
        raise FileNotFoundError(f"{root}: synthesis sources missing ({[str(m) for m in missing] or 'none found'}); "
                                "re-run `mmfree convert`")
    return sources, includes


def synth_dir(project: str | Path, board: str) -> Path:
    return Path(project) / "synth" / board


def ip_vlnv(top: str) -> str:
    ip = toolchain()["hls_ip"]
    return f"{ip['vendor']}:{ip['library']}:{top}:{ip['version']}"


def write_hls_tcl(project: str | Path, board: str) -> Path:
    """Render ``synth/<board>/vitis_hls.tcl`` for a project."""
    root = Path(project).resolve()
    info = read_project(root)
    facts = board_facts(board)
    sources, includes = hls_sources(root, info)
    tools, ip = toolchain()["tools"], toolchain()["hls_ip"]
    out = synth_dir(root, board)
    out.mkdir(parents=True, exist_ok=True)
    text = render("vitis_hls.tcl.in", {
        "TOOL_VERSION": tools["vitis_hls"]["version"],
        "NAME": info.get("name") or root.name, "TOP": info.get("top", "mmfree_step"),
        "BOARD": board, "PART": facts["part"], "CLOCK_MHZ": facts["clock_mhz"],
        "SOURCES": [str(s) for s in sources], "INCLUDE_DIRS": [str(i) for i in includes],
        "OUT_DIR": str(out), "IP_VENDOR": ip["vendor"], "IP_LIBRARY": ip["library"],
        "IP_VERSION": ip["version"]})
    path = out / "vitis_hls.tcl"
    path.write_text(text)
    return path


def write_bd_tcl(project: str | Path, board: str, jobs: Optional[int] = None) -> Path:
    """Render ``synth/<board>/vivado_bd.tcl`` (block design → bitstream + .hwh)."""
    root = Path(project).resolve()
    info = read_project(root)
    facts = board_facts(board)
    tc = toolchain()
    ps, ip = tc["ps"][facts["ps"]], tc["hls_ip"]
    for key in ("control_port", "hp_ports"):
        if key not in facts:
            raise ValueError(f"data/boards.json: board {board!r} has no '{key}' (the PS ports the "
                             "block design connects)")
    unknown = [p for p in [facts["control_port"], *facts["hp_ports"]] if p not in ps["port_enable"]]
    if unknown:
        raise ValueError(f"data/boards.json: board {board!r} names PS ports {unknown} that "
                         f"data/toolchain.json does not know for PS type {facts['ps']}")
    out = synth_dir(root, board)
    out.mkdir(parents=True, exist_ok=True)
    top = info.get("top", "mmfree_step")
    text = render("vivado_bd.tcl.in", {
        "TOOL_VERSION": tc["tools"]["vivado"]["version"],
        "NAME": info.get("name") or root.name, "BOARD": board, "PART": facts["part"],
        "BOARD_PART": facts["board_part"], "BOARD_CONNECTIONS": facts.get("board_connections", ""),
        "CLOCK_MHZ": facts["clock_mhz"],
        "IP_REPO": str(out / "vitis_hls_prj" / "solution1" / "impl" / "ip"),
        "IP_VLNV": ip_vlnv(top), "IP_INSTANCE": ip["instance"],
        "IP_CONTROL": f"s_axi_{ip['control_bundle']}",
        "PS_VLNV": ps["vlnv"], "PS_RULE": ps["preset_rule"], "PS_PRESET": ps["preset_config"],
        "PS_CLOCK_PROPERTY": ps["pl_clock_property"],
        "CONTROL_PORT": facts["control_port"], "HP_PORTS": list(facts["hp_ports"]),
        "PORT_ENABLE": ps["port_enable"], "OUT_DIR": str(out),
        "JOBS": int(jobs or max(1, (os.cpu_count() or 2) // 2))})
    path = out / "vivado_bd.tcl"
    path.write_text(text)
    return path


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


def run_hls(project: str | Path, board: str) -> dict:
    """Vitis HLS: csynth + IP export. Returns the parsed csynth report summary."""
    script = write_hls_tcl(project, board)
    exe = find_tool("vitis_hls")
    if exe is None:
        raise ToolMissingError(missing_tool_message(["vitis_hls"], [script], "`make hls` (C synthesis)"))
    out = script.parent
    _record_tool(out, "vitis_hls", _check_version("vitis_hls", exe))
    _run([exe, "-f", str(script)], cwd=out, log=out / "vitis_hls.log")
    return report_summary(project, board)


def report_summary(project: str | Path, board: str) -> dict:
    """Latency and resources from the copied csynth.xml (parser shared with the perf model)."""
    from ..perf import parse_csynth_report

    info = read_project(project)
    top = info.get("top", "mmfree_step")
    reports = synth_dir(project, board) / "reports"
    xml = reports / f"{top}_csynth.xml"
    if not xml.is_file():
        xml = reports / "csynth.xml"
    rep = parse_csynth_report(xml)
    summary = {"top": rep.top, "part": rep.part, "target_clock_ns": rep.target_clock_ns,
               "estimated_clock_ns": rep.estimated_clock_ns, "latency_cycles": rep.latency_worst,
               "interval_cycles": rep.interval_max, "resources": rep.resources,
               "available": rep.available}
    (reports / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_overlay(project: str | Path, board: str, jobs: Optional[int] = None) -> Path:
    """Vivado: block design → bitstream + .hwh in synth/<board>/ (runs HLS first if needed)."""
    hls_script = write_hls_tcl(project, board)
    bd_script = write_bd_tcl(project, board, jobs)
    out = bd_script.parent
    ip_repo = out / "vitis_hls_prj" / "solution1" / "impl" / "ip"
    need_hls = not ip_repo.is_dir()
    missing = [k for k, needed in (("vitis_hls", need_hls), ("vivado", True)) if needed and not find_tool(k)]
    if missing:
        scripts = ([hls_script] if need_hls else []) + [bd_script]
        raise ToolMissingError(missing_tool_message(missing, scripts, "`make overlay` (bitstream)"))
    if need_hls:
        run_hls(project, board)
    exe = find_tool("vivado")
    _record_tool(out, "vivado", _check_version("vivado", exe))
    _run([exe, "-mode", "batch", "-nojournal", "-source", str(bd_script)], cwd=out, log=out / "vivado.log")
    name = read_project(project).get("name") or Path(project).name
    bit = out / f"{name}.bit"
    if not bit.is_file() or not (out / f"{name}.hwh").is_file():
        raise SynthError(f"Vivado finished but {bit} (and its .hwh) is missing; see {out / 'vivado.log'}")
    return bit
