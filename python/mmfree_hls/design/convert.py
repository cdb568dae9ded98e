"""Decode-step model → hls4ml project → C-simulation library.

    project = convert(model_or_checkpoint, "hls_project/demo", config="my_precision.yaml")
    lib = project.compile()                  # g++ → hls_project/demo/csim/libmmfree_csim.so
    logits, state = project.csim().step(x, state)

The project directory holds

    firmware/            hls4ml's C++ (top ``mmfree_net``) with our layer headers
                         (nnet_utils/nnet_bitlinear.h ...), packed ternary ROMs
                         (weights/tw*.h) and the wrapper ``mmfree_step.cpp``
    mmfree_build.tcl     Vitis HLS script naming the top and its interfaces
    csim/build_csim.sh   the g++ command compile() runs (also for rebuilding elsewhere)
    csim/libmmfree_csim.so
    mmfree_project.json  model config, precision, top, ports, content hash, sources
    model/               the model's checkpoint (when it was given as an object)

``mmfree_step`` is both the synthesis top (m_axi data, s_axilite control) and,
compiled with g++, the C-ABI entry of contract 2; board and C-sim therefore
share one buffer layout. Conversion and compilation are cached by a content
hash of the model, the precision config and the generator's own sources: a
second convert + compile of the same inputs returns at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from ..config import ModelConfig
from ..hls_project import BUILD_SCRIPT, CSIM_LIBRARY, PROJECT_FILE, read_project
from ..packing import row_bytes
from ..reference import MMFreeLM, bitlinear_names
from ..runtime.backend_csim import STEP_SYMBOL, library_dimensions
from . import hls_layers
from .precision import PrecisionConfig, load_precision, parse_type

TOP = "mmfree_step"
HLS4ML_TOP = "mmfree_net"
WRAPPER = "firmware/mmfree_step.cpp"
BUILD_TCL = "mmfree_build.tcl"
#: Port → (m_axi bundle, direction); the order is the top's argument order (contract 2).
PORTS = {"x_in": ("gmem_x", "in"), "state": ("gmem_s", "inout"), "logits": ("gmem_o", "out")}
#: -fvisibility=hidden / -fno-gnu-unique: g++ emits template statics (the σ table keyed by a config
#: struct name such as config7) as unique symbols that the loader merges across libraries, so two
#: projects loaded in one process (tests, sweeps, notebooks) would share the first one's table.
#: Hidden visibility keeps each library's own; only the C ABI below is exported.
CXX_FLAGS = ("-std=c++14", "-fPIC", "-shared", "-Wall", "-Wextra", "-Wno-unknown-pragmas",
             "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-fno-gnu-unique")
C_API = 'extern "C" __attribute__((visibility("default")))'

DEFAULT_BOARD = "pynq-z2"
_GENERATOR_SOURCES = [Path(__file__), Path(hls_layers.__file__), Path(__file__).with_name("precision.py")]
_BOARDS_JSON = Path(__file__).resolve().parents[1] / "data" / "boards.json"


class ProjectExistsError(FileExistsError):
    """The output directory holds something else; pass overwrite=True (--force) to replace it."""


class CompileError(RuntimeError):
    """g++ failed on the generated project."""


# ================================================================ hashing
def _hash_array(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def content_hash(model: MMFreeLM, precision: PrecisionConfig) -> str:
    """What the generated hardware depends on: ternary weights, γ, norms, bounds, config, precision, code."""
    import hls4ml
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    h.update(precision.digest().encode())
    h.update(hls4ml.__version__.encode())
    for src in _GENERATOR_SOURCES + [hls_layers.HEADER_DIR / n for n in hls_layers.HEADERS]:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    for name in bitlinear_names(model.config):
        tw = model.ternary[name]
        _hash_array(h, tw.w_q)
        h.update(repr(float(tw.gamma)).encode())
    for key in sorted(model.params):
        if key.endswith("norm.weight") or key == "model.lower_bounds":
            _hash_array(h, np.asarray(model.params[key], dtype=np.float32))
    return h.hexdigest()


def project_hash(model, config: str | Path | Mapping | PrecisionConfig | None = None) -> str:
    """The cache key :func:`convert` uses for ``model`` (object or checkpoint) under ``config``.

    Two conversions with the same key produce the same project, so a shared cache
    can hold projects in ``<cache>/<key>`` and ``convert(model, <cache>/<key>)`` is a hit.
    """
    return content_hash(_resolve_model(model)[0], load_precision(config))


# ================================================================ the project
class CSimLibrary:
    """ctypes binding of a compiled ``libmmfree_csim.so`` (numpy buffers, contract 2)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lib = ctypes.CDLL(str(self.path.resolve()))
        f = ctypes.POINTER(ctypes.c_float)
        self._step = getattr(self._lib, STEP_SYMBOL)
        self._step.restype, self._step.argtypes = ctypes.c_int, [f, f, f]
        (self.d, self.L, self.e, self.V), _ = library_dimensions(self._lib)
        self._x = np.zeros(self.d, np.float32)
        self._logits = np.zeros(self.V, np.float32)

    def step(self, x, state) -> tuple[np.ndarray, np.ndarray]:
        """(x_t (d,), s_{t-1} (L, e)) → (logits (V,), s_t (L, e)), float32 on the buffers."""
        self._x[:] = np.asarray(x, dtype=np.float32).reshape(self.d)
        s = np.array(state, dtype=np.float32).reshape(self.L * self.e)
        f = ctypes.POINTER(ctypes.c_float)
        rc = self._step(self._x.ctypes.data_as(f), s.ctypes.data_as(f), self._logits.ctypes.data_as(f))
        if rc != 0:
            raise RuntimeError(f"mmfree_step returned {rc}: non-finite input (x or state)")
        return self._logits.copy(), s.reshape(self.L, self.e)

    def generate_greedy(self, model: MMFreeLM, prompt, n_new: int) -> list[int]:
        """Greedy decoding with this library doing the decode step (embeddings from ``model``)."""
        prompt = list(prompt)
        state = np.zeros((self.L, self.e), np.float32)
        for tok in prompt:
            logits, state = self.step(model.embed(tok), state)
        out = []
        for _ in range(n_new):
            tok = int(np.argmax(logits))
            out.append(tok)
            logits, state = self.step(model.embed(tok), state)
        return out


class MMFreeProject:
    """An HLS project written by :func:`convert`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = read_project(self.root)
        self._csim: CSimLibrary | None = None

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def lib_path(self) -> Path:
        return self.root / CSIM_LIBRARY

    @property
    def content_hash(self) -> str:
        return self.info["content_hash"]

    def _stamp_path(self) -> Path:
        return self.root / "csim" / ".built"

    def compile_command(self, opt: str = "-O2") -> list[str]:
        srcs = [str(Path(s)) for s in self.info["hls_sources"]]
        return ["g++", opt, *CXX_FLAGS, "-isystem", "firmware/ap_types", "-Ifirmware", *srcs, "-o", CSIM_LIBRARY]

    def is_compiled(self, opt: str | None = None) -> bool:
        """The library exists and was built from this project (with ``opt``, if given)."""
        stamp = self._stamp_path()
        if not (self.lib_path.is_file() and stamp.is_file()):
            return False
        try:
            built = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            return False
        return built.get("hash") == self.content_hash and (opt is None or built.get("cmd") == self.compile_command(opt))

    def compile(self, opt: str = "-O2", force: bool = False, verbose: bool = True) -> Path:
        """Build ``csim/libmmfree_csim.so`` with g++ (cached: nothing to do if already built)."""
        if not force and self.is_compiled(opt):
            return self.lib_path
        if shutil.which("g++") is None:
            raise CompileError("g++ is not on PATH; install a C++ compiler (e.g. apt-get install g++)")
        cmd = self.compile_command(opt)
        if verbose:
            print(f"mmfree: compiling the C-simulation of {self.name} with g++ {opt} "
                  f"({len(self.info['hls_sources'])} sources) ...", flush=True)
        t0 = time.perf_counter()
        self.lib_path.unlink(missing_ok=True)
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True)
        (self.root / "csim" / "compile.log").write_text(" ".join(cmd) + "\n" + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
            raise CompileError(f"g++ failed on {self.root} (full log: csim/compile.log):\n{tail}")
        self._stamp_path().write_text(json.dumps({"hash": self.content_hash, "cmd": cmd}))
        self.info["compile_seconds"] = round(time.perf_counter() - t0, 2)
        if verbose:
            print(f"mmfree: built {self.lib_path} in {self.info['compile_seconds']:.1f} s", flush=True)
        self._csim = None
        return self.lib_path

    def compile_warnings(self, ours_only: bool = True) -> list[str]:
        """Warning lines of the last compile whose location is in our sources (or all of them)."""
        log = self.root / "csim" / "compile.log"
        if not log.is_file():
            return []
        ours = set(hls_layers.HEADERS) | {Path(WRAPPER).name}
        lines = [ln for ln in log.read_text().splitlines() if ": warning:" in ln]
        if ours_only:
            lines = [ln for ln in lines if Path(ln.split(":", 1)[0]).name in ours]
        return lines

    def csim(self) -> CSimLibrary:
        """The compiled C-simulation, loaded (compiled first, -O2, if it is not built yet)."""
        if self._csim is None:
            if not self.is_compiled():
                self.compile()
            self._csim = CSimLibrary(self.lib_path)
        return self._csim


# ================================================================ generation
def _resolve_model(model) -> tuple[MMFreeLM, str | None]:
    if isinstance(model, MMFreeLM):
        return model, None
    if isinstance(model, (str, Path)):
        from ..checkpoint import load_checkpoint
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint directory (no config.json); give a "
                                    "checkpoint written by `mmfree train` / `mmfree import`")
        return load_checkpoint(path), str(path.resolve())
    raise TypeError(f"convert() takes an MMFreeLM or a checkpoint path, not {type(model).__name__}")


def _default_part() -> str:
    return json.loads(_BOARDS_JSON.read_text())[DEFAULT_BOARD]["part"]


def layer_kinds(cfg: ModelConfig) -> dict[str, tuple[str, int]]:
    """Every extension layer of the step model: Keras name → (precision kind, fan-in)."""
    d, e, m = cfg.d, cfg.input_dim, cfg.ffn_dim
    out: dict[str, tuple[str, int]] = {}
    for l in range(cfg.num_hidden_layers):
        out.update({f"l{l}_attn_norm": ("rmsnorm", d), f"l{l}_i_proj": ("bitlinear", d),
                    f"l{l}_f_proj": ("bitlinear", d), f"l{l}_g_proj": ("bitlinear", d),
                    f"l{l}_mlgru": ("mlgru", e), f"l{l}_g_norm": ("gated_rmsnorm", e),
                    f"l{l}_o_proj": ("bitlinear", e), f"l{l}_mlp_norm": ("rmsnorm", d),
                    f"l{l}_gate_proj": ("bitlinear", d), f"l{l}_glu": ("glu", 2 * m),
                    f"l{l}_down_proj": ("bitlinear", m)})
    out.update({"norm": ("rmsnorm", d), "lm_head": ("bitlinear", d)})
    return out


def check_reuse_factors(cfg: ModelConfig, precision: PrecisionConfig) -> None:
    """A BitLinear's reuse factor must divide its packed row; say so before anything is built."""
    for name, (kind, n_in) in layer_kinds(cfg).items():
        if kind != "bitlinear":
            continue
        rf = precision.for_layer(kind, name)["reuse_factor"]
        rb = row_bytes(n_in, hls_layers.PACKING_LAYOUT)
        if rb % rf:
            ok = [r for r in range(1, rb + 1) if rb % r == 0]
            raise hls_layers.ConversionError(
                f"{name}: reuse_factor {rf} must divide the {rb} packed bytes of a weight row "
                f"(n_in = {n_in}); choose one of {ok} (precision config: layers.{name}.reuse_factor)")


def _weight_source(name: str) -> str:
    """Reference state-dict key of the weight an extension layer stores (norm weights)."""
    if name in ("norm", "lm_head"):
        return "model.norm.weight" if name == "norm" else "lm_head.norm.weight"
    l, rest = name[1:].split("_", 1)
    p = f"model.layers.{l}."
    return {"attn_norm": p + "attn_norm.weight", "mlp_norm": p + "mlp_norm.weight",
            "g_norm": p + "attn.g_norm.weight", "gate_proj": p + "mlp.gate_proj.norm.weight",
            "down_proj": p + "mlp.down_proj.norm.weight"}.get(rest, p + f"attn.{rest}.norm.weight")


def check_weight_ranges(model: MMFreeLM, precision: PrecisionConfig) -> None:
    """Every stored norm weight and lower bound must fit its fixed-point type (no silent saturation)."""
    def limit(text: str) -> float:
        t = parse_type(text)
        return 2.0 ** (t.integer - (1 if t.signed else 0)) - 2.0 ** -t.fractional

    for name, (kind, _) in layer_kinds(model.config).items():
        if kind == "glu":
            continue                                   # no weights
        knobs = precision.for_layer(kind, name)
        if kind == "mlgru":
            values, key, what = model.lb[int(name[1:].split("_")[0])], "lower_bound", "lower bounds"
        else:
            key = "norm" if kind == "bitlinear" else "weight"
            values, what = np.asarray(model.params[_weight_source(name)]), "norm weights"
        peak = float(np.max(np.abs(values))) if np.size(values) else 0.0
        if peak > limit(knobs[key]):
            raise hls_layers.ConversionError(
                f"{name}: its {what} reach {peak:.4g} but {kind}.{key} = {knobs[key]} holds at most "
                f"{limit(knobs[key]):.4g}; widen the integer part in the precision config "
                f"(e.g. layers.{name}.{key})")


def hls_config(cfg: ModelConfig, precision: PrecisionConfig) -> dict:
    """hls4ml HLSConfig: per-layer knobs of the precision config, by Keras layer name."""
    residual, state, logits = (precision.tensor_type(k) for k in ("residual", "state", "logits"))
    names: dict[str, dict] = {"x": {"Precision": {"result": residual}}}
    for l in range(cfg.num_hidden_layers):
        names[f"state_{l}"] = {"Precision": {"result": state}}
        for add in (f"l{l}_attn_add", f"l{l}_mlp_add"):
            names[add] = {"Precision": {"result": residual}}
    for name, (kind, _) in layer_kinds(cfg).items():
        knobs = precision.for_layer(kind, name)
        result = state if kind == "mlgru" else logits if name == "lm_head" else knobs["result"]
        names[name] = {"Precision": {"result": result}, "mmfree_knobs": knobs}
    return {"Model": {"Precision": residual, "ReuseFactor": precision.data.get("reuse_factor", 1),
                      "Strategy": "Latency", "PipelineStyle": "dataflow"},
            "LayerName": names}


def _wrapper_cpp(hm, cfg: ModelConfig) -> str:
    """``mmfree_step``: float buffers ↔ the hls4ml top's fixed-point arrays."""
    d, L, e, V = cfg.d, cfg.num_hidden_layers, cfg.state_size, cfg.vocab_size
    x_var = hm.graph["x"].get_output_variable()
    s_in = [hm.graph[f"state_{l}"].get_output_variable() for l in range(L)]
    logit_var = hm.graph["lm_head"].get_output_variable()
    s_out = [hm.graph[f"l{l}_mlgru"].get_output_variable() for l in range(L)]
    order_in = [x_var.name] + [v.name for v in s_in]
    order_out = [logit_var.name] + [v.name for v in s_out]
    got_in = [v.name for v in hm.get_input_variables()]
    got_out = [v.name for v in hm.get_output_variables()]
    if got_in != order_in or got_out != order_out:
        raise hls_layers.ConversionError(f"hls4ml top has ports {got_in} -> {got_out}; expected "
                                         f"{order_in} -> {order_out} (x, states -> logits, states)")

    def copy_loop(label: str, n: int, dst: str, src: str) -> list[str]:
        # one element per cycle: the m_axi side becomes a burst
        return [f"    MMFREE_LOOP({label})", f"    for (int i = 0; i < {n}; i++) {{",
                "        #pragma HLS PIPELINE II=1", f"        {dst} = {src};", "    }"]

    decl = [f"    {x_var.type.name} x[{d}];", f"    {logit_var.type.name} logits_q[{V}];"]
    load = copy_loop("LOAD_X", d, "x[i]", "x_in[i]")
    store = copy_loop("STORE_LOGITS", V, "logits[i]", "logits_q[i].to_float()")
    for l in range(L):
        decl += [f"    {s_in[l].type.name} s{l}_in[{e}];", f"    {s_out[l].type.name} s{l}_out[{e}];"]
        load += copy_loop(f"LOAD_S{l}", e, f"s{l}_in[i]", f"state[{l * e} + i]")
        store += copy_loop(f"STORE_S{l}", e, f"state[{l * e} + i]", f"s{l}_out[i].to_float()")
    args = ", ".join(["x"] + [f"s{l}_in" for l in range(L)] + ["logits_q"] + [f"s{l}_out" for l in range(L)])
    depth = {"x_in": d, "state": L * e, "logits": V}
    pragmas = [f"    #pragma HLS INTERFACE m_axi port={p} offset=slave bundle={b} depth={depth[p]}"
               for p, (b, _) in PORTS.items()]
    pragmas += [f"    #pragma HLS INTERFACE s_axilite port={p} bundle=control" for p in PORTS]
    pragmas.append("    #pragma HLS INTERFACE s_axilite port=return bundle=control")
    return "\n".join([
        f"// {TOP}: the decode step of the MatMul-free LM, one token (generated by mmfree_hls.design.convert).",
        "//",
        f"//   x_in   float[{d}]        in     token embedding x_t (the host looks it up)",
        f"//   state  float[{L}*{e}]     in/out s_(t-1) -> s_t, layer-major: state[l*e + i]",
        f"//   logits float[{V}]        out",
        "//",
        "// Synthesis (__SYNTHESIS__): void top, m_axi data ports (offset=slave) and one",
        "// s_axilite bundle 'control' for the pointers and ap_ctrl. Elsewhere: the C-ABI",
        "// entry points of the C-simulation library (0 = success).",
        f'#include "{HLS4ML_TOP}.h"',
        '#include "nnet_utils/nnet_mmfree_common.h"',
        "#include <cmath>",
        "",
        f"static const int MMFREE_D = {d}, MMFREE_L = {L}, MMFREE_E = {e}, MMFREE_V = {V};",
        "",
        "static void mmfree_step_body(const float *x_in, float *state, float *logits) {",
        *decl,
        *load,
        f"    {HLS4ML_TOP}({args});",
        *store,
        "}",
        "",
        "#ifdef __SYNTHESIS__",
        f"void {TOP}(const float x_in[{d}], float state[{L * e}], float logits[{V}]) {{",
        *pragmas,
        "    mmfree_step_body(x_in, state, logits);",
        "}",
        "#else",
        f'{C_API} int {TOP}(const float *x_in, float *state, float *logits) {{',
        "    if (!x_in || !state || !logits)",
        "        return 1;",
        "    for (int i = 0; i < MMFREE_D; i++)",
        "        if (!std::isfinite(x_in[i]))",
        "            return 2;",
        "    for (int i = 0; i < MMFREE_L * MMFREE_E; i++)",
        "        if (!std::isfinite(state[i]))",
        "            return 2;",
        "    mmfree_step_body(x_in, state, logits);",
        "    return 0;",
        "}",
        "",
        f'{C_API} int mmfree_info(int *d, int *L, int *e, int *V) {{',
        "    if (!d || !L || !e || !V)",
        "        return 1;",
        "    *d = MMFREE_D;",
        "    *L = MMFREE_L;",
        "    *e = MMFREE_E;",
        "    *V = MMFREE_V;",
        "    return 0;",
        "}",
        "#endif",
        "",
    ])


def _keep_logits_in_block_ram(root: Path, var: str) -> None:
    """Drop hls4ml's complete partition of the logits port (V registers for a 32k vocabulary).

    io_parallel partitions every top-level array; the logits are written one row
    per II by the lm_head BitLinear and read one per cycle by the wrapper, so a
    block RAM serves them. hls4ml has no per-port switch for this, hence the edit.
    """
    top = root / "firmware" / f"{HLS4ML_TOP}.cpp"
    line = f"#pragma HLS ARRAY_PARTITION variable={var} complete dim=0"
    text = top.read_text()
    if line not in text:
        raise hls_layers.ConversionError(f"{top}: expected hls4ml's '{line}' for the logits port; "
                                         "this hls4ml version writes the top differently")
    top.write_text(text.replace(line, f"// {var}: logits stay in block RAM (mmfree convert removed the "
                                      "complete ARRAY_PARTITION hls4ml io_parallel puts on every port)"))


def _build_tcl(name: str, part: str, clock_ns: float, sources: list[str], ports: list[dict]) -> str:
    lines = [
        f"# Vitis HLS build of {name}: the mmfree-hls decode step (generated by mmfree convert).",
        f"# Top {TOP}(x_in, state, logits): every pointer an m_axi master (offset=slave) in its",
        "# own bundle, the pointers and ap_ctrl on one s_axilite bundle 'control'.",
        "# Run from this directory: vitis_hls -f mmfree_build.tcl",
        "# (board-specific flow: mmfree synth hls <this project> --board <board>)",
        f"set top {TOP}",
        f"set part {{{part}}}",
        f"set clock_ns {clock_ns}",
        "# port: interface bundle direction elements(float32)",
    ]
    lines += [f"set interface({p['name']}) {{m_axi {p['bundle']} {p['direction']} {p['shape'][0]}}}" for p in ports]
    lines += [
        "set interface(control) {s_axilite control ap_ctrl_hs}",
        "open_project -reset mmfree_hls_prj",
        "set_top $top",
    ]
    lines += [f"add_files {s} -cflags \"-std=c++14 -Ifirmware\"" for s in sources]
    lines += [
        "open_solution -reset solution1 -flow_target vivado",
        "set_part $part",
        "create_clock -period $clock_ns -name default",
        "config_interface -m_axi_addr64=true",
        "csynth_design",
        "export_design -format ip_catalog",
        "exit",
        "",
    ]
    return "\n".join(lines)


def _prepare_dir(root: Path, digest: str, overwrite: bool) -> bool:
    """True if ``root`` already holds this exact project (nothing to do).

    A new or empty ``root`` is marked as ours first (so a conversion interrupted
    half-way is still recognised); ``overwrite`` replaces only a directory that
    carries the marker (or ``mmfree_project.json``), never a directory of the
    user's, the working directory or one of its parents.
    """
    from ..fsio import PROJECT_KIND, NotOursError, check_not_protected, make_output_dir, marker_kind, remove_tree

    if root.is_symlink():
        raise ProjectExistsError(f"{root} is a symbolic link; pass the directory it points to "
                                 "(or a new directory) as --out")
    if root.exists() and not root.is_dir():
        raise ProjectExistsError(f"{root} exists and is not a directory")
    if not root.exists() or not any(root.iterdir()):
        make_output_dir(root, PROJECT_KIND)
        return False
    pfile = root / PROJECT_FILE
    if pfile.is_file():
        try:
            if json.loads(pfile.read_text()).get("content_hash") == digest:
                return True
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pass
        what = "a different project (other model, precision or generator version)"
    elif marker_kind(root) == PROJECT_KIND:
        what = "an unfinished project (an earlier conversion was interrupted)"
    else:
        raise ProjectExistsError(f"{root} holds files that are not an mmfree HLS project; refusing to "
                                 "touch it (--force only replaces a project mmfree wrote): choose another --out")
    if not overwrite:
        raise ProjectExistsError(f"{root} already holds {what}; choose another --out or pass --force "
                                 "(overwrite=True) to replace it")
    try:
        check_not_protected(root)
        remove_tree(root, PROJECT_KIND, legacy_markers=(PROJECT_FILE,))
    except NotOursError as e:
        raise ProjectExistsError(str(e)) from None
    make_output_dir(root, PROJECT_KIND)
    return False


def convert(model, output_dir: str | Path, config: str | Path | Mapping | PrecisionConfig | None = None, *,
            overwrite: bool = False, part: str | None = None, clock_period_ns: float = 10.0,
            verbose: bool = True) -> MMFreeProject:
    """Write the HLS project of ``model`` (an MMFreeLM or a checkpoint path) under ``output_dir``."""
    mm, ckpt_path = _resolve_model(model)
    cfg = mm.config
    if cfg.num_heads != 1:
        raise hls_layers.ConversionError(f"num_heads = {cfg.num_heads}: the HLS gated RMSNorm normalises one "
                                         "head; convert a model with num_heads 1")
    precision = load_precision(config)
    check_reuse_factors(cfg, precision)
    check_weight_ranges(mm, precision)
    digest = content_hash(mm, precision)
    root = Path(output_dir)
    if _prepare_dir(root, digest, overwrite):
        if verbose:
            print(f"mmfree: {root} is up to date (content hash {digest[:12]})", flush=True)
        return MMFreeProject(root)

    t0 = time.perf_counter()
    import hls4ml
    hls_layers.register()
    keras_step = mm.to_keras("step")
    root.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        hm = hls4ml.converters.convert_from_keras_model(
            keras_step, output_dir=str(root), project_name=HLS4ML_TOP, backend="Vitis", io_type="io_parallel",
            part=part or _default_part(), clock_period=clock_period_ns, hls_config=hls_config(cfg, precision),
            write_weights_txt=False)
        hm.write()
    (root / "convert.log").write_text(log.getvalue())

    _keep_logits_in_block_ram(root, hm.graph["lm_head"].get_output_variable().name)
    (root / WRAPPER).write_text(_wrapper_cpp(hm, cfg))
    sources = [WRAPPER, f"firmware/{HLS4ML_TOP}.cpp"]
    d, L, e, V = cfg.d, cfg.num_hidden_layers, cfg.state_size, cfg.vocab_size
    shapes = {"x_in": [d], "state": [L * e], "logits": [V]}
    ports = [{"name": p, "dtype": "float32", "shape": shapes[p], "direction": direction, "bundle": bundle,
              "interface": "m_axi"} for p, (bundle, direction) in PORTS.items()]
    (root / BUILD_TCL).write_text(_build_tcl(root.name, part or _default_part(), clock_period_ns, sources, ports))

    (root / "csim").mkdir(exist_ok=True)
    project_info = {
        "name": root.name, "top": TOP, "hls4ml_top": HLS4ML_TOP, "content_hash": digest,
        "model": cfg.to_dict(), "precision": precision.to_dict(), "precision_source": precision.source,
        "ports": ports, "control": {"interface": "s_axilite", "bundle": "control"},
        "dims": {"d": d, "L": L, "e": e, "V": V}, "packing": hls_layers.PACKING_LAYOUT, "tier": "on-chip",
        "io_type": "io_parallel", "backend": "Vitis", "part": part or _default_part(),
        "clock_period_ns": clock_period_ns, "hls_sources": sources, "hls_include_dirs": ["firmware"],
        "csim_library": CSIM_LIBRARY, "build_tcl": BUILD_TCL, "hls4ml_version": hls4ml.__version__,
        "checkpoint": ckpt_path,
    }
    if ckpt_path is None:
        from ..checkpoint import save_checkpoint
        save_checkpoint(mm, root / "model")
        project_info["checkpoint"] = str((root / "model").resolve())
    project_info["convert_seconds"] = round(time.perf_counter() - t0, 2)
    (root / PROJECT_FILE).write_text(json.dumps(project_info, indent=2) + "\n")

    project = MMFreeProject(root)
    cmd = " ".join(project.compile_command())
    (root / BUILD_SCRIPT).write_text("#!/bin/sh\n# Rebuild the C-simulation library (run from the project "
                                     "directory).\nset -e\ncd \"$(dirname \"$0\")/..\"\n" + cmd + "\n")
    (root / BUILD_SCRIPT).chmod(0o755)
    if verbose:
        print(f"mmfree: wrote {root} in {project_info['convert_seconds']:.1f} s "
              f"(top {TOP}, {len(bitlinear_names(cfg))} BitLinear layers)", file=sys.stdout, flush=True)
    return project
