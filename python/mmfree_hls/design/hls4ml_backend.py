"""hls4ml as the front end of the engine: the ``MMFreeEngine`` backend.

The QKeras decode-step model goes through hls4ml 1.3.0 with our extension
layers (:mod:`mmfree_hls.design.hls_layers`); the backend lowers the graph to
the time-multiplexed engine instead of one spatial instance per layer::

    hm = hls4ml.converters.convert_from_keras_model(
        model.to_keras("step"), output_dir="hls_project/demo", backend="MMFreeEngine",
        board="pynq-z2", tier="on-chip", packing="2bit", model_config=model.config.to_dict())
    hm.write()                                       # the engine project (mmfree_hls.engine.project)
    hm.compile()                                     # g++ -> csim/libmmfree_csim.so
    logits, *state = hm.predict([x, state_0, ..., state_{L-1}])

Built like hls4ml's own VivadoAccelerator backend: ``MMFreeEngineBackend``
subclasses the Vitis backend, ``MMFreeEngineWriter`` the Vitis writer, both
registered by name (``register_backend`` / ``register_writer``) with the
backend's flows (``register_flow``):

* ``mmfreeengine:ip`` = hls4ml's ``convert`` + ``optimize`` flows, then
  ``engine_lowering``: the graph's weight variables (ternary W_q and γ of every
  BitLinear, norm weights, the MLGRU lower bounds) become the
  :class:`~mmfree_hls.reference.MMFreeLM` the engine is generated from, checked
  against the model config and the engine's shape constraints;
* ``mmfreeengine:write`` = ``make_stamp`` + ``write_hls``: the writer emits the
  engine sources, its configuration and layer schedule, and the weight image
  (:func:`mmfree_hls.engine.project.write_project`).

The board preset, tier, packing and the project record's extra fields travel
in the hls4ml config, section ``MMFreeEngine`` (``create_initial_config``).
``ModelGraph.compile()`` builds the C-simulation library and ``predict`` runs
decode steps through the one binding,
:class:`mmfree_hls.runtime.backend_csim.CSimLibrary`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import ModelConfig
from ..engine.codegen import TOP
from ..engine.presets import EnginePreset, get_preset
from ..engine.project import check_shape, write_project
from ..quant import TernaryWeight
from ..reference import MMFreeLM, bitlinear_names, expected_shapes
from .hls_layers import ConversionError, layer_classes, register as register_layers

BACKEND = "MMFreeEngine"
SECTION = "MMFreeEngine"          # the hls4ml config section the backend reads
EMBEDDINGS = "model.embeddings.weight"
_REF_TO_KERAS = {"attn": ("i_proj", "f_proj", "g_proj", "o_proj"), "mlp": ("gate_proj", "down_proj")}


# ------------------------------------------------------------------ preset <-> config
def preset_knobs(preset: EnginePreset) -> dict:
    """Every knob of ``preset`` as JSON-able values (board and tier apart)."""
    knobs = {f.name: getattr(preset, f.name) for f in fields(preset) if f.name not in ("board", "tier")}
    knobs["ports"] = list(knobs["ports"])
    return knobs


def section_preset(section: Mapping) -> EnginePreset:
    knobs = dict(section["knobs"])
    knobs["ports"] = tuple(knobs["ports"])
    return get_preset(section["board"], section["tier"], **knobs)


def engine_section(graph) -> dict:
    sec = graph.config.get_config_value(SECTION)
    if not isinstance(sec, Mapping) or not {"board", "tier", "packing", "knobs", "model"} <= set(sec):
        raise ConversionError(f"the hls4ml config has no complete '{SECTION}' section; convert with "
                              f"backend='{BACKEND}', board=..., tier=..., packing=..., model_config=...")
    return dict(sec)


# ------------------------------------------------------------------ graph -> model
class GraphParams(Mapping):
    """``MMFreeLM.params`` read from the graph. The decode step has no embedding table
    (the host embeds tokens), so that key is listed but cannot be read."""

    def __init__(self, data: dict, embedding_shape: tuple):
        self._data = data
        self._embedding_shape = embedding_shape

    def __getitem__(self, key):
        if key == EMBEDDINGS:
            raise KeyError(f"{EMBEDDINGS}: the decode-step graph holds no embedding table (the host "
                           "embeds tokens); load the checkpoint to embed")
        return self._data[key]

    def __iter__(self):
        yield from self._data
        yield EMBEDDINGS

    def __len__(self):
        return len(self._data) + 1

    def __contains__(self, key):
        return key == EMBEDDINGS or key in self._data


def _raw_lower_bounds(lb: np.ndarray) -> np.ndarray:
    """Raw ``model.lower_bounds`` whose softmax-cumsum gives ``lb`` (up to rounding; the
    exact bounds are set on the model afterwards)."""
    p = np.empty_like(lb)
    p[1:] = np.diff(lb, axis=0)
    p[0] = 1.0 - lb[-1]
    return np.log(np.maximum(p, np.finfo(np.float64).tiny)).astype(np.float32)


def engine_model(graph) -> MMFreeLM:
    """The model the engine is written from, rebuilt from the graph's weight variables (cached)."""
    cached = getattr(graph, "_mmfree_engine_model", None)
    if cached is not None:
        return cached
    sec = engine_section(graph)
    hc = graph.config
    per_layer = sorted({f"{k.removesuffix('_default')} (precision)"
                        for k in [*hc.layer_name_precision, *hc.layer_type_precision]}
                       | {f"{k} (reuse factor)" for k in [*hc.layer_name_rf, *hc.layer_type_rf]})
    if per_layer:
        raise ConversionError(f"per-layer settings in the hls4ml config cannot be honoured: {', '.join(per_layer)}."
                              " The engine runs every layer on the same units with one type per role; set its "
                              "knobs instead (frac_bits, sigmoid_table_bits, vector_lanes, ...)")
    cfg = ModelConfig.from_dict(dict(sec["model"]))
    shapes = expected_shapes(cfg)
    classes = layer_classes()
    nodes = {n.name: n for n in graph.get_layers()}

    def node(name: str, kind: str):
        n = nodes.get(name)
        if n is None:
            raise ConversionError(f"the hls4ml graph has no layer '{name}': convert the decode-step model "
                                  "built by model.to_keras('step') for this model config")
        if not isinstance(n, classes[kind]):
            raise ConversionError(f"hls4ml layer '{name}' is a {n.class_name}, the engine expects a {kind}")
        return n

    def weight(n, var: str, key: Optional[str] = None, dtype=np.float32) -> np.ndarray:
        data = np.asarray(n.get_weights(var).data)
        want = shapes.get(key) if key else None
        if want is not None and tuple(data.shape) != tuple(want):
            raise ConversionError(f"hls4ml layer '{n.name}': {var} has shape {tuple(data.shape)}, the model "
                                  f"config says {tuple(want)} ({key})")
        return data.astype(dtype, copy=False)

    params: dict[str, np.ndarray] = {}
    ternary: dict[str, TernaryWeight] = {}

    def bitlinear(keras_name: str, prefix: str) -> None:
        n = node(keras_name, "BitLinear")
        w_q = weight(n, "weight", prefix + ".weight", np.int8)
        gamma = float(weight(n, "gamma", dtype=np.float64)[0])
        ternary[prefix] = TernaryWeight(w_q=w_q, gamma=gamma)
        params[prefix + ".norm.weight"] = weight(n, "norm", prefix + ".norm.weight")

    L, e = cfg.num_hidden_layers, cfg.input_dim
    lb = np.zeros((L, e), np.float64)
    for l in range(L):
        p = f"model.layers.{l}."
        params[p + "attn_norm.weight"] = weight(node(f"l{l}_attn_norm", "RMSNorm"), "weight", p + "attn_norm.weight")
        params[p + "mlp_norm.weight"] = weight(node(f"l{l}_mlp_norm", "RMSNorm"), "weight", p + "mlp_norm.weight")
        params[p + "attn.g_norm.weight"] = weight(node(f"l{l}_g_norm", "GatedRMSNorm"), "weight",
                                                  p + "attn.g_norm.weight")
        for group, projs in _REF_TO_KERAS.items():
            for q in projs:
                bitlinear(f"l{l}_{q}", f"{p}{group}.{q}")
        node(f"l{l}_glu", "GLU")
        cell = node(f"l{l}_mlgru", "MLGRUCell")
        lb[l] = weight(cell, "lower_bound", dtype=np.float64)
        if l > 0 and cfg.use_lower_bound != bool(cell.get_attr("use_lower_bound")):
            raise ConversionError(f"hls4ml layer 'l{l}_mlgru': use_lower_bound={cell.get_attr('use_lower_bound')}"
                                  f" but the model config says use_lower_bound={cfg.use_lower_bound}")
    params["model.norm.weight"] = weight(node("norm", "RMSNorm"), "weight", "model.norm.weight")
    bitlinear("lm_head", "lm_head")
    if cfg.use_lower_bound:
        params["model.lower_bounds"] = _raw_lower_bounds(lb)
    if sorted(ternary) != sorted(bitlinear_names(cfg)):
        raise ConversionError("the hls4ml graph's BitLinears do not match the model config")
    model = MMFreeLM.from_ternary(cfg, GraphParams(params, shapes[EMBEDDINGS]), ternary)
    model.lb = lb                           # the graph's constants, exactly (row 0 unused)
    check_shape(cfg, section_preset(sec), sec["packing"])
    graph._mmfree_engine_model = model
    return model


def check_same_model(built: MMFreeLM, model: MMFreeLM) -> None:
    """The graph carried exactly the model's weights (else the project would not be the model's)."""
    for name, tw in model.ternary.items():
        got = built.ternary[name]
        if got.gamma != tw.gamma or not np.array_equal(got.w_q, tw.w_q):
            raise ConversionError(f"{name}: the ternary weights parsed by hls4ml differ from the model's "
                                  f"(γ {got.gamma!r} vs {tw.gamma!r}); the model's float weights do not "
                                  "quantise to its ternary weights -- re-import the checkpoint")
    for key in [k for k in model.params if k.endswith("norm.weight")]:
        if not np.array_equal(np.asarray(built.params[key], np.float64), np.asarray(model.params[key], np.float64)):
            raise ConversionError(f"{key}: the value parsed by hls4ml differs from the model's")
    if model.config.use_lower_bound and not np.array_equal(built.lb[1:], model.lb[1:]):
        raise ConversionError("model.lower_bounds: the bounds parsed by hls4ml differ from the model's")


# ------------------------------------------------------------------ writer and backend
_REGISTERED = False


def _define_classes():
    from hls4ml.backends import VitisBackend, VivadoBackend
    from hls4ml.model.flow import register_flow
    from hls4ml.model.optimizer import model_optimizer
    from hls4ml.writer import VitisWriter

    class MMFreeEngineWriter(VitisWriter):
        """Writes the engine project (sources, configuration, schedule, weight image), not per-layer C++."""

        def write_hls(self, model):
            sec = engine_section(model)
            write_project(engine_model(model), model.config.get_output_dir(), section_preset(sec),
                          sec["packing"], extra=sec.get("record") or {})

    class MMFreeEngineBackend(VitisBackend):
        """hls4ml backend lowering the decode-step graph onto the one time-multiplexed engine."""

        def __init__(self):
            super(VivadoBackend, self).__init__(name=BACKEND)
            self._register_layer_attributes()
            self._register_flows()

        def _register_flows(self):
            lower = register_flow("lower", [f"{BACKEND.lower()}:engine_lowering"], requires=["optimize"],
                                  backend=self.name)
            self._default_flow = register_flow("ip", None, requires=[lower], backend=self.name)
            self._writer_flow = register_flow("write", ["make_stamp", f"{BACKEND.lower()}:write_hls"],
                                              requires=[self._default_flow], backend=self.name)

        def create_initial_config(self, board="pynq-z2", tier="on-chip", packing="2bit", knobs=None,
                                  model_config=None, record=None, namespace=None, **_):
            """hls4ml config: part and clock of the board preset, the ``MMFreeEngine`` section.

            ``knobs`` overrides the preset's engine knobs; ``model_config`` is the
            model's ``ModelConfig.to_dict()``; ``record`` adds fields to the project record.
            """
            preset = get_preset(board, tier, **dict(knobs or {}))
            if model_config is None:
                raise ConversionError(f"backend='{BACKEND}' needs model_config=model.config.to_dict()")
            config = super().create_initial_config(part=preset.board.part, clock_period=1000.0 / preset.clock_mhz,
                                                   io_type="io_parallel", namespace=namespace,
                                                   write_weights_txt=False)
            config[SECTION] = {"board": preset.board.name, "tier": preset.tier, "packing": packing,
                               "knobs": preset_knobs(preset), "model": dict(model_config),
                               "record": dict(record or {})}
            return config

        @model_optimizer()
        def engine_lowering(self, model):
            engine_model(model)
            return False

        def compile(self, model):
            """g++ the project's C-simulation library (cached); ``ModelGraph`` loads it."""
            from ..engine.build import compile_csim
            model._mmfree_csim = None
            return str(compile_csim(model.config.get_output_dir(), verbose=False))

        def predict(self, model, x):
            """Decode steps: ``x`` = [x_t, state_0, ..., state_{L-1}] (one row each, or (n, ·) batches of
            independent steps); returns [logits, state_0', ..., state_{L-1}'] the same way."""
            lib = getattr(model, "_mmfree_csim", None)
            if lib is None:
                if getattr(model, "_top_function_lib", None) is None:
                    raise ConversionError("the model is not compiled; call compile() before predict()")
                from ..engine.project import EngineProject
                from ..runtime.backend_csim import CSimLibrary
                project = EngineProject(model.config.get_output_dir())
                lib = model._mmfree_csim = CSimLibrary(project.lib_path, weights=project.weights())
            return _predict(lib, x)

        def build(self, model, **kwargs):
            raise ConversionError("the engine is synthesised per board by `mmfree synth hls PROJECT --board B` "
                                  "(Vitis HLS Tcl of the board preset), not by hls4ml's build()")

    return MMFreeEngineBackend, MMFreeEngineWriter


def _predict(lib, x) -> list:
    L = lib.L
    xs = [x] if isinstance(x, np.ndarray) else list(x)
    if len(xs) != 1 + L:
        raise ConversionError(f"predict takes [x_t, state_0, ..., state_{L - 1}] ({1 + L} arrays), got {len(xs)}")
    arrs = [np.asarray(a, np.float32) for a in xs]
    batched = arrs[0].ndim == 2
    rows = [a.reshape(-1, n) if a.size % n == 0 else None
            for a, n in zip(arrs, [lib.d] + [lib.e] * L)]
    n = rows[0].shape[0] if rows[0] is not None else -1
    for i, (r, width) in enumerate(zip(rows, [lib.d] + [lib.e] * L)):
        if r is None or r.shape[0] != n:
            what = "x_t" if i == 0 else f"state_{i - 1}"
            raise ConversionError(f"predict: {what} has shape {arrs[i].shape}; expected ({width},) or "
                                  f"(n, {width}) with the same n for every input")
    logits = np.empty((n, lib.V), np.float32)
    states = np.empty((L, n, lib.e), np.float32)
    for i in range(n):
        logits[i], states[:, i] = lib.step(rows[0][i], np.stack([r[i] for r in rows[1:]]))
    out = [logits] + list(states)
    return out if batched else [o[0] for o in out]


def register() -> None:
    """Register the extension layers, the writer, the backend and its flows with hls4ml (idempotent)."""
    global _REGISTERED
    register_layers()
    if _REGISTERED:
        return
    from hls4ml.backends import get_available_backends, register_backend
    from hls4ml.writer import register_writer
    from hls4ml.writer.writers import writer_map
    backend_cls, writer_cls = _define_classes()
    if BACKEND not in writer_map:
        register_writer(BACKEND, writer_cls)
    if BACKEND.lower() not in get_available_backends():
        register_backend(BACKEND, backend_cls)
    _REGISTERED = True


# ------------------------------------------------------------------ convert's entry point
def hls_model(model: MMFreeLM, root: str | Path, preset: EnginePreset, packing: str, *, extra=None,
              log: Optional[io.StringIO] = None):
    """Parse ``model``'s QKeras decode-step model with hls4ml onto the ``MMFreeEngine`` backend."""
    import hls4ml
    register()
    keras_step = model.to_keras("step")
    frac = preset.frac_bits
    with contextlib.redirect_stdout(log if log is not None else io.StringIO()):
        return hls4ml.converters.convert_from_keras_model(
            keras_step, output_dir=str(root), project_name=TOP, backend=BACKEND,
            hls_config={"Model": {"Precision": f"fixed<32,{32 - frac}>", "ReuseFactor": 1}},
            board=preset.board.name, tier=preset.tier, packing=packing, knobs=preset_knobs(preset),
            model_config=model.config.to_dict(), record=extra)


def convert_through_hls4ml(model: MMFreeLM, root: str | Path, preset: EnginePreset, packing: str, *,
                           extra: Optional[dict] = None, verbose: bool = True):
    """Write the engine project of ``model`` under ``root`` through hls4ml; returns the ModelGraph."""
    log = io.StringIO()
    hm = hls_model(model, root, preset, packing, extra=extra, log=log)
    check_same_model(engine_model(hm), model)
    with contextlib.redirect_stdout(log):
        hm.write()
    if log.getvalue().strip():
        (Path(root) / "hls4ml.log").write_text(log.getvalue())
    return hm
