"""Synthesis reports that replace the cost model's estimates where they exist.

Two kinds, best first:

* ``vivado_impl`` — post-implementation figures that ``make overlay`` writes to
  ``synth/<board>/reports/impl.json`` (parsed by :mod:`mmfree_hls.design.synth`);
* ``vitis_hls_report`` — a Vitis HLS ``<top>_csynth.xml`` (C synthesis estimates),
  under ``synth/<board>/reports/`` or anywhere under ``**/syn/report/``.

Standard library only: ``mmfree perf`` and ``mmfree resources`` work on the runtime install.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

SOURCE_ANALYTIC = "analytic"
SOURCE_CSYNTH = "vitis_hls_report"
SOURCE_IMPL = "vivado_impl"
TOP = "mmfree_engine"


class ReportError(ValueError):
    """A file that is not the report it claims to be (the message names it)."""


@dataclass
class CsynthReport:
    """The figures of a Vitis HLS ``<top>_csynth.xml``."""

    path: str = ""
    top: str = ""
    part: str = ""
    target_clock_ns: Optional[float] = None
    estimated_clock_ns: Optional[float] = None
    latency_best: Optional[int] = None
    latency_average: Optional[int] = None
    latency_worst: Optional[int] = None
    interval_min: Optional[int] = None
    interval_max: Optional[int] = None
    resources: dict = field(default_factory=dict)
    available: dict = field(default_factory=dict)
    loops: list = field(default_factory=list)

    def utilisation(self) -> dict:
        return {k: v / self.available[k] for k, v in self.resources.items()
                if v is not None and self.available.get(k)}


def _number(text: Optional[str], kind=float):
    """Report numbers; Vitis writes 'undef' or '?' when a loop bound is unknown."""
    if text is None:
        return None
    t = text.strip()
    try:
        return kind(float(t)) if kind is int else kind(t)
    except ValueError:
        return None


def _loops(node: Optional[ET.Element], prefix: str = "") -> list[dict]:
    """Loops of SummaryOfLoopLatency: one element per loop, named after it; nested loops are children."""
    out: list[dict] = []
    for child in (node if node is not None else []):
        if not len(child):              # a scalar field (TripCount, Latency, ...), not a loop
            continue
        name = child.findtext("Name") or child.tag
        out.append({"name": prefix + name,
                    "trip_count": _number(child.findtext("TripCount"), int),
                    "latency": _number(child.findtext("Latency") or child.findtext("Worst-caseLatency"), int),
                    "iteration_latency": _number(child.findtext("IterationLatency"), int),
                    "pipeline_ii": _number(child.findtext("PipelineII"), int),
                    "pipeline_depth": _number(child.findtext("PipelineDepth"), int)})
        out.extend(_loops(child, prefix + name + "/"))
    return out


def parse_csynth_report(xml_path: str | Path) -> CsynthReport:
    """Latency, II, clock, loops and resources from a Vitis HLS csynth.xml."""
    p = Path(xml_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no csynth report; run `mmfree synth` (Vitis HLS csynth) first")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        raise ReportError(f"{p}: not a readable csynth.xml ({e})") from None
    perf = root.find("PerformanceEstimates")
    area = root.find("AreaEstimates")
    if perf is None and area is None:
        raise ReportError(f"{p}: no PerformanceEstimates or AreaEstimates: not a Vitis HLS csynth.xml")
    rep = CsynthReport(path=str(p), top=root.findtext("UserAssignments/TopModelName", ""),
                       part=root.findtext("UserAssignments/Part", ""),
                       target_clock_ns=_number(root.findtext("UserAssignments/TargetClockPeriod")))
    if perf is not None:
        rep.estimated_clock_ns = _number(perf.findtext("SummaryOfTimingAnalysis/EstimatedClockPeriod"))
        lat = perf.find("SummaryOfOverallLatency")
        if lat is not None:
            rep.latency_best = _number(lat.findtext("Best-caseLatency"), int)
            rep.latency_average = _number(lat.findtext("Average-caseLatency"), int)
            rep.latency_worst = _number(lat.findtext("Worst-caseLatency"), int)
            rep.interval_min = _number(lat.findtext("Interval-min"), int)
            rep.interval_max = _number(lat.findtext("Interval-max"), int)
        rep.loops = _loops(perf.find("SummaryOfLoopLatency"))
    if area is not None:
        def counts(node):
            # Older Vivado HLS calls the DSP column DSP48E; one name here.
            return {("DSP" if c.tag.startswith("DSP48") else c.tag): _number(c.text, int)
                    for c in (node if node is not None else [])}
        rep.resources = counts(area.find("Resources"))
        rep.available = counts(area.find("AvailableResources"))
    return rep


def find_csynth_report(project_dir: str | Path, board: Optional[str] = None,
                       top: str = TOP) -> Optional[Path]:
    """The top's csynth.xml of a project (``synth/<board>/reports`` first), if Vitis HLS has run."""
    root = Path(project_dir)
    if not root.is_dir():
        return None
    if board:
        rep = root / "synth" / board / "reports"
        for name in (f"{top}_csynth.xml", "csynth.xml"):
            if (rep / name).is_file():
                return rep / name
    found = sorted(root.glob("**/syn/report/*_csynth.xml"))
    if board:
        found = [p for p in found if f"/synth/{board}/" in p.as_posix()] or \
                [p for p in found if "/synth/" not in p.as_posix()]
    named = [p for p in found if p.name == f"{top}_csynth.xml"]
    if named:
        return named[0]
    plain = [p for p in found if p.name == "csynth.xml"]
    return plain[0] if plain else None


def find_impl_summary(project_dir: str | Path, board: str) -> Optional[dict]:
    """``synth/<board>/reports/impl.json`` (Vivado post-implementation), if `make overlay` wrote one."""
    f = Path(project_dir) / "synth" / board / "reports" / "impl.json"
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{f}: not readable JSON ({e}); re-run `mmfree synth overlay`") from None
    if data.get("source") != SOURCE_IMPL or not isinstance(data.get("resources"), dict):
        raise ReportError(f"{f}: not a Vivado implementation summary (no source 'vivado_impl' / resources)")
    return data


def measured(project_dir: Optional[str | Path], board: str, top: str = TOP) -> Optional[dict]:
    """The best report of a project for a board: {source, resources, path, [latency_cycles, clock_mhz]}."""
    if not project_dir:
        return None
    impl = find_impl_summary(project_dir, board)
    if impl is not None:
        return {"source": SOURCE_IMPL, "resources": impl["resources"],
                "path": str(Path(project_dir) / "synth" / board / "reports" / "impl.json"),
                "clock_mhz": impl.get("fmax_mhz") or impl.get("clock_mhz")}
    xml = find_csynth_report(project_dir, board, top)
    if xml is None:
        return None
    rep = parse_csynth_report(xml)
    return {"source": SOURCE_CSYNTH, "resources": rep.resources, "path": str(xml),
            "latency_cycles": rep.latency_worst}
