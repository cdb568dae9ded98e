"""hls4ml extension layers of the MatMul-free LM.

hls4ml's extension API, once per building block (``register()`` does it all):

* a Keras handler (``register_keras_v2_layer_handler``) reading a layer of
  :mod:`mmfree_hls.design.layers` — the BitLinear handler quantises the
  kernel exactly like :func:`mmfree_hls.quant.quantize_weights` and packs it
  2 bits a weight (:mod:`mmfree_hls.packing`, layout ``2bit``);
* an hls4ml ``Layer`` (``register_layer``) holding sizes, the knobs of the
  precision config and the weight variables;
* a config template (the C++ ``struct configN``) and a function-call template
  for the Vitis and Vivado backends (``register_template``);
* the C++ headers of ``design/hls/`` (``register_source``);
* a writer pass (``register_pass`` in the ``write`` flow) that writes each
  BitLinear's packed weights as a ``static const unsigned char`` ROM — hls4ml's
  own weight writer would emit one ``ap_uint<8>`` constructor per byte, which
  g++ needs minutes for at LM sizes.

Layer knobs come from the precision config (``precision.py``): convert puts
them into ``HLSConfig.LayerName.<layer>.mmfree_knobs``; a layer converted
without them uses the defaults of ``design/configs/precision_default.yaml``.

The C++ config text is produced by plain functions (``*_config_cpp``) so the
unit tests can instantiate the headers with the very same structs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import BITLINEAR_NORM_EPS
from ..packing import pack_ternary, row_bytes
from ..quant import quantize_weights
from .precision import load_precision, parse_type

HEADER_DIR = Path(__file__).resolve().parents[3] / "design" / "hls"
HEADERS = ("nnet_mmfree_common.h", "nnet_bitlinear.h", "nnet_rmsnorm.h", "nnet_mlgru.h", "nnet_glu.h")
PACKING_LAYOUT = "2bit"
BACKENDS = ("Vitis", "Vivado")

#: Keras class → (hls4ml layer kind of the precision config)
KERAS_KINDS = {"BitLinear": "bitlinear", "RMSNorm": "rmsnorm", "GatedRMSNorm": "gated_rmsnorm",
               "MLGRUCell": "mlgru", "GLU": "glu"}


class ConversionError(ValueError):
    """A Keras layer the HLS path cannot express as it is configured."""


# ====================================================================== numbers
def pow2_split(value: float) -> tuple[float, int]:
    """value = mant · 2^exp with mant in [1, 2): a block-floating-point constant."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"constant {value!r} must be positive and finite")
    m, e = math.frexp(value)
    return 2.0 * m, e - 1


def exact_sumsq_type(width: int, integer: int, n: int) -> str:
    """ap_ufixed type that holds Σ x² of n values of ap_fixed<width, integer> exactly."""
    g = math.ceil(math.log2(n)) if n > 1 else 0
    return f"ap_ufixed<{2 * width + g},{2 * integer + g}>"


def _cpp_double(v: float) -> str:
    text = repr(float(v))
    return text if any(c in text for c in ".e") else text + ".0"


def _sigmoid_fields(sig: dict) -> dict:
    table_bits = int(sig["table_size"]).bit_length() - 1
    range_bits = int(sig["range"]).bit_length() - 1
    if sig["frac_bits"] + table_bits - range_bits < 0:
        raise ConversionError(f"sigmoid table: frac_bits {sig['frac_bits']} too small for table_size "
                              f"{sig['table_size']} and range {sig['range']}; raise frac_bits")
    return {"sigmoid_table_bits": table_bits, "sigmoid_range_bits": range_bits,
            "sigmoid_frac_bits": int(sig["frac_bits"]),
            "sigmoid_interpolate": "true" if sig["interpolate"] else "false"}


# ============================================================ C++ config structs
def _struct(name: str, base: str, lines: list[str]) -> str:
    body = "\n".join("    " + ln for ln in lines)
    return f"struct {name} : nnet::{base} {{\n{body}\n}};\n"


def bitlinear_config_cpp(name: str, p: dict) -> str:
    """p: n_in, n_out, reuse_factor, norm_t, sumsq_t, mant_bits, newton_iterations, quant_bits, gamma,
    and optionally act_bits (default 8) and accum_bits ('auto' / 0 = exact, else saturating)."""
    act_bits = int(p.get("act_bits", 8))
    accum = p.get("accum_bits", "auto")
    qmax = 2 ** (act_bits - 1) - 1
    sqrt_m, sqrt_e = pow2_split(math.sqrt(p["n_in"]))
    sc_m, sc_e = pow2_split(1.0 / (qmax * p["gamma"]))
    return _struct(name, "bitlinear_config", [
        f"static const unsigned n_in = {p['n_in']};",
        f"static const unsigned n_out = {p['n_out']};",
        f"static const unsigned row_bytes = {row_bytes(p['n_in'], PACKING_LAYOUT)};",
        f"static const unsigned reuse_factor = {p['reuse_factor']};",
        f"typedef {p['norm_t']} norm_t;",
        "typedef unsigned char packed_t;",
        f"typedef {p['sumsq_t']} sumsq_t;",
        f"static const unsigned mant_bits = {p['mant_bits']};",
        f"static const unsigned newton_iterations = {p['newton_iterations']};",
        f"static const unsigned quant_bits = {p['quant_bits']};",
        f"static const unsigned act_bits = {act_bits};",
        f"static const unsigned accum_bits = {0 if accum in ('auto', 0) else int(accum)};",
        f"static constexpr double eps_sum = {_cpp_double(p['n_in'] * BITLINEAR_NORM_EPS)};",
        f"static constexpr double sqrt_n_mant = {_cpp_double(sqrt_m)};",
        f"static const int sqrt_n_exp = {sqrt_e};",
        f"static constexpr double out_scale_mant = {_cpp_double(sc_m)}; // 1/({qmax} gamma), gamma = {p['gamma']!r}",
        f"static const int out_scale_exp = {sc_e};",
    ])


def _norm_lines(p: dict) -> list[str]:
    sqrt_m, sqrt_e = pow2_split(math.sqrt(p["n_in"]))
    return [
        f"static const unsigned mant_bits = {p['mant_bits']};",
        f"static const unsigned newton_iterations = {p['newton_iterations']};",
        f"static constexpr double eps_sum = {_cpp_double(p['n_in'] * p['eps'])};",
        f"static constexpr double sqrt_n_mant = {_cpp_double(sqrt_m)};",
        f"static const int sqrt_n_exp = {sqrt_e};",
    ]


def _sigmoid_lines(p: dict) -> list[str]:
    s = _sigmoid_fields(p["sigmoid"])
    return [
        f"static const unsigned sigmoid_table_bits = {s['sigmoid_table_bits']};",
        f"static const int sigmoid_range_bits = {s['sigmoid_range_bits']};",
        f"static const unsigned sigmoid_frac_bits = {s['sigmoid_frac_bits']};",
        f"static const bool sigmoid_interpolate = {s['sigmoid_interpolate']};",
        f"typedef {p['sigmoid_table_t']} sigmoid_table_t;",
    ]


def rmsnorm_config_cpp(name: str, p: dict) -> str:
    """p: n_in, reuse_factor, weight_t, sumsq_t, eps, mant_bits, newton_iterations."""
    return _struct(name, "rmsnorm_config", [
        f"static const unsigned n_in = {p['n_in']};",
        f"static const unsigned reuse_factor = {p['reuse_factor']};",
        f"typedef {p['weight_t']} weight_t;",
        f"typedef {p['sumsq_t']} sumsq_t;",
    ] + _norm_lines(p))


def gated_rmsnorm_config_cpp(name: str, p: dict) -> str:
    """p: rmsnorm's keys plus normed_t, act_t, sigmoid, sigmoid_table_t."""
    return _struct(name, "gated_rmsnorm_config", [
        f"static const unsigned n_in = {p['n_in']};",
        f"static const unsigned reuse_factor = {p['reuse_factor']};",
        f"typedef {p['weight_t']} weight_t;",
        f"typedef {p['sumsq_t']} sumsq_t;",
        f"typedef {p['normed_t']} normed_t;",
        f"typedef {p['act_t']} act_t;",
    ] + _norm_lines(p) + _sigmoid_lines(p))


def mlgru_config_cpp(name: str, p: dict) -> str:
    """p: n_state, reuse_factor, use_lower_bound, gate_t, act_t, lower_bound_t, sigmoid, sigmoid_table_t."""
    return _struct(name, "mlgru_config", [
        f"static const unsigned n_state = {p['n_state']};",
        f"static const unsigned reuse_factor = {p['reuse_factor']};",
        f"static const bool use_lower_bound = {'true' if p['use_lower_bound'] else 'false'};",
        f"typedef {p['gate_t']} gate_t;",
        f"typedef {p['act_t']} act_t;",
        f"typedef {p['lower_bound_t']} lower_bound_t;",
    ] + _sigmoid_lines(p))


def glu_config_cpp(name: str, p: dict) -> str:
    """p: n_out, reuse_factor, act_t, sigmoid, sigmoid_table_t."""
    return _struct(name, "glu_config", [
        f"static const unsigned n_out = {p['n_out']};",
        f"static const unsigned reuse_factor = {p['reuse_factor']};",
        f"typedef {p['act_t']} act_t;",
    ] + _sigmoid_lines(p))


def packed_weights_header(var: str, packed: np.ndarray, shape: tuple[int, int], layer: str,
                          namespace: str | None = None) -> str:
    """A BitLinear's packed ternary weights as a C++ ROM (``static const unsigned char``)."""
    flat = np.ascontiguousarray(packed, dtype=np.uint8).ravel()
    lines = [f"// Ternary weights of {layer}: {shape[0]} x {shape[1]} (out, in), layout {PACKING_LAYOUT} "
             "(mmfree_hls.packing):",
             "// four weights a byte, weight j in bits [2j, 2j+2): 00 -> 0, 01 -> +1, 11 -> -1.",
             f"#ifndef {var.upper()}_H_", f"#define {var.upper()}_H_", ""]
    if namespace:
        lines.append(f"namespace {namespace} {{")
    lines.append(f"static const unsigned char {var}[{flat.size}] = {{")
    for start in range(0, flat.size, 32):
        lines.append("    " + ",".join(str(int(b)) for b in flat[start:start + 32]) + ",")
    lines.append("};")
    if namespace:
        lines.append("}")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


# ====================================================================== hls4ml
_REGISTERED: set[str] = set()
_CLASSES: tuple | None = None


def _hls4ml_classes():
    """The hls4ml-dependent half of this module (imported lazily: hls4ml pulls in TensorFlow)."""
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.model.layers import Layer
    from hls4ml.model.types import IntegerPrecisionType, NamedType

    class MMFreeLayer(Layer):
        """Common knob handling of the extension layers."""

        kind = ""

        def knobs(self) -> dict:
            knobs = self.get_attr("mmfree_knobs")
            if knobs is None:
                knobs = load_precision().for_layer(self.kind, self.name)
                self.set_attr("mmfree_knobs", knobs)
            return knobs

        def _precision(self, text: str):
            parse_type(text, f"{self.name}")           # our error message before hls4ml's
            return self.model.config.backend.convert_precision_string(text)

        def _named_type(self, key: str, text: str):
            t = NamedType(f"{self.name}_{key}_t", self._precision(text))
            self.set_attr(f"{key}_t", t)
            return t

        def _sumsq_type(self, text: str, n: int):
            if text == "auto":
                p = self.get_input_variable().type.precision
                text = exact_sumsq_type(p.width, p.integer, n)
            return self._named_type("sumsq", text)

        def _sigmoid_types(self, knobs: dict):
            self.set_attr("sigmoid", dict(knobs["sigmoid"]))
            self._named_type("sigmoid_table", knobs["sigmoid"]["table"])

        def _weight(self, key: str, var: str, data: np.ndarray, text: str):
            self.add_weights_variable(name=key, var_name=var + "{index}", type_name=var + "{index}_t",
                                      precision=self._precision(text), data=np.asarray(data, dtype=np.float64))

        def _common(self):
            knobs = self.knobs()
            self.set_attr("reuse_factor", int(knobs["reuse_factor"]))
            return knobs

    class MMFreeBitLinear(MMFreeLayer):
        kind = "bitlinear"

        def initialize(self):
            knobs = self._common()
            n_in, n_out = self.get_attr("n_in"), self.get_attr("n_out")
            rb = row_bytes(n_in, PACKING_LAYOUT)
            if rb % knobs["reuse_factor"]:
                ok = [r for r in range(1, rb + 1) if rb % r == 0]
                raise ConversionError(
                    f"{self.name}: reuse_factor {knobs['reuse_factor']} must divide the {rb} packed bytes "
                    f"of a weight row (n_in = {n_in}); choose one of {ok}")
            self.add_output_variable([n_out])
            self._weight("norm", "bn", self.get_attr("norm_data"), knobs["norm"])
            self._sumsq_type(knobs["sumsq"], n_in)
            self.set_attr("row_bytes", rb)

    class MMFreeRMSNorm(MMFreeLayer):
        kind = "rmsnorm"

        def initialize(self):
            knobs = self._common()
            self.add_output_variable([self.get_attr("n_in")])
            self._weight("weight", "nw", self.get_attr("weight_data"), knobs["weight"])
            self._sumsq_type(knobs["sumsq"], self.get_attr("n_in"))

    class MMFreeGatedRMSNorm(MMFreeLayer):
        kind = "gated_rmsnorm"

        def initialize(self):
            knobs = self._common()
            self.add_output_variable([self.get_attr("n_in")])
            self._weight("weight", "gw", self.get_attr("weight_data"), knobs["weight"])
            self._sumsq_type(knobs["sumsq"], self.get_attr("n_in"))
            self._named_type("normed", knobs["normed"])
            self._named_type("act", knobs["act"])
            self._sigmoid_types(knobs)

    class MMFreeMLGRUCell(MMFreeLayer):
        kind = "mlgru"

        def initialize(self):
            knobs = self._common()
            self.add_output_variable([self.get_attr("n_state")])
            self._weight("lower_bound", "lb", self.get_attr("lower_bound_data"), knobs["lower_bound"])
            self._named_type("gate", knobs["gate"])
            self._named_type("act", knobs["act"])
            self._sigmoid_types(knobs)

    class MMFreeGLU(MMFreeLayer):
        kind = "glu"

        def initialize(self):
            knobs = self._common()
            self.add_output_variable([self.get_attr("n_out")])
            self._named_type("act", knobs["act"])
            self._sigmoid_types(knobs)

    # ------------------------------------------------------------- templates
    def _knob_params(node) -> dict:
        knobs = node.get_attr("mmfree_knobs")
        p = {"reuse_factor": node.get_attr("reuse_factor")}
        for k in ("mant_bits", "newton_iterations", "quant_bits", "act_bits"):
            if k in knobs:
                p[k] = int(knobs[k])
        if "accum_bits" in knobs:
            p["accum_bits"] = knobs["accum_bits"]
        for k in ("sumsq", "normed", "act", "gate", "sigmoid_table"):
            t = node.get_attr(f"{k}_t")
            if t is not None:
                p[f"{k}_t"] = t.name
        if node.get_attr("sigmoid") is not None:
            p["sigmoid"] = node.get_attr("sigmoid")
        return p

    def _var(node, i):
        return node.get_input_variable(node.inputs[i])

    class BitLinearConfig(LayerConfigTemplate):
        def __init__(self):
            super().__init__(MMFreeBitLinear)

        def format(self, node):
            p = _knob_params(node)
            p.update(n_in=node.get_attr("n_in"), n_out=node.get_attr("n_out"), gamma=node.get_attr("gamma"),
                     norm_t=node.get_weights("norm").type.name)
            return bitlinear_config_cpp(f"config{node.index}", p)

    class BitLinearFunction(FunctionCallTemplate):
        def __init__(self):
            super().__init__(MMFreeBitLinear, include_header=["nnet_utils/nnet_bitlinear.h"])

        def transform(self, model, node):
            # the packed ROM is a per-layer header (written by the mmfree write pass)
            super().transform(model, node)
            node.set_attr("include_header", list(self.include_header) + [f"weights/tw{node.index}.h"])
            return False

        def format(self, node):
            x, y = _var(node, 0), node.get_output_variable()
            return (f"nnet::bitlinear<{x.type.name}, {y.type.name}, config{node.index}>"
                    f"({x.name}, {y.name}, {node.get_weights('norm').name}, tw{node.index});")

    class RMSNormConfig(LayerConfigTemplate):
        def __init__(self):
            super().__init__(MMFreeRMSNorm)

        def format(self, node):
            p = _knob_params(node)
            p.update(n_in=node.get_attr("n_in"), eps=node.get_attr("eps"),
                     weight_t=node.get_weights("weight").type.name)
            return rmsnorm_config_cpp(f"config{node.index}", p)

    class RMSNormFunction(FunctionCallTemplate):
        def __init__(self):
            super().__init__(MMFreeRMSNorm, include_header=["nnet_utils/nnet_rmsnorm.h"])

        def format(self, node):
            x, y = _var(node, 0), node.get_output_variable()
            return (f"nnet::rmsnorm<{x.type.name}, {y.type.name}, config{node.index}>"
                    f"({x.name}, {y.name}, {node.get_weights('weight').name});")

    class GatedRMSNormConfig(LayerConfigTemplate):
        def __init__(self):
            super().__init__(MMFreeGatedRMSNorm)

        def format(self, node):
            p = _knob_params(node)
            p.update(n_in=node.get_attr("n_in"), eps=node.get_attr("eps"),
                     weight_t=node.get_weights("weight").type.name)
            return gated_rmsnorm_config_cpp(f"config{node.index}", p)

    class GatedRMSNormFunction(FunctionCallTemplate):
        def __init__(self):
            super().__init__(MMFreeGatedRMSNorm, include_header=["nnet_utils/nnet_mlgru.h"])

        def format(self, node):
            g, s, y = _var(node, 0), _var(node, 1), node.get_output_variable()
            return (f"nnet::gated_rmsnorm<{g.type.name}, {s.type.name}, {y.type.name}, config{node.index}>"
                    f"({g.name}, {s.name}, {y.name}, {node.get_weights('weight').name});")

    class MLGRUConfig(LayerConfigTemplate):
        def __init__(self):
            super().__init__(MMFreeMLGRUCell)

        def format(self, node):
            p = _knob_params(node)
            p.update(n_state=node.get_attr("n_state"), use_lower_bound=node.get_attr("use_lower_bound"),
                     lower_bound_t=node.get_weights("lower_bound").type.name)
            return mlgru_config_cpp(f"config{node.index}", p)

    class MLGRUFunction(FunctionCallTemplate):
        def __init__(self):
            super().__init__(MMFreeMLGRUCell, include_header=["nnet_utils/nnet_mlgru.h"])

        def format(self, node):
            i, f, s, y = _var(node, 0), _var(node, 1), _var(node, 2), node.get_output_variable()
            return (f"nnet::mlgru_cell<{i.type.name}, {f.type.name}, {s.type.name}, {y.type.name}, "
                    f"config{node.index}>({i.name}, {f.name}, {s.name}, {y.name}, "
                    f"{node.get_weights('lower_bound').name});")

    class GLUConfig(LayerConfigTemplate):
        def __init__(self):
            super().__init__(MMFreeGLU)

        def format(self, node):
            p = _knob_params(node)
            p.update(n_out=node.get_attr("n_out"))
            return glu_config_cpp(f"config{node.index}", p)

    class GLUFunction(FunctionCallTemplate):
        def __init__(self):
            super().__init__(MMFreeGLU, include_header=["nnet_utils/nnet_glu.h"])

        def format(self, node):
            x, y = _var(node, 0), node.get_output_variable()
            return f"nnet::glu<{x.type.name}, {y.type.name}, config{node.index}>({x.name}, {y.name});"

    layers = {"BitLinear": MMFreeBitLinear, "RMSNorm": MMFreeRMSNorm, "GatedRMSNorm": MMFreeGatedRMSNorm,
              "MLGRUCell": MMFreeMLGRUCell, "GLU": MMFreeGLU}
    templates = [BitLinearConfig, BitLinearFunction, RMSNormConfig, RMSNormFunction, GatedRMSNormConfig,
                 GatedRMSNormFunction, MLGRUConfig, MLGRUFunction, GLUConfig, GLUFunction]
    return layers, templates


# ================================================================ Keras handlers
def _weights(data_reader, layer_name: str, var: str, shape: tuple) -> np.ndarray:
    from hls4ml.converters.keras_v2_to_hls import get_weights_data
    w = get_weights_data(data_reader, layer_name, var)
    if w is None:
        raise ConversionError(f"Keras layer {layer_name} has no weight '{var}'; build the step model "
                              "with mmfree_hls.design.keras_model (model.to_keras('step'))")
    w = np.asarray(w)
    if tuple(w.shape) != tuple(shape):
        raise ConversionError(f"Keras layer {layer_name}: weight '{var}' has shape {w.shape}, expected {shape}")
    return w


def _base(keras_layer, input_names):
    from hls4ml.converters.keras_v2_to_hls import parse_default_keras_layer
    return parse_default_keras_layer(keras_layer, input_names)


def parse_bitlinear(keras_layer, input_names, input_shapes, data_reader):
    layer = _base(keras_layer, input_names)
    cfg = keras_layer["config"]
    if not cfg.get("quantize", True):
        raise ConversionError(f"{layer['name']}: a full-precision BitLinear (quantize=False) has no "
                              "ternary weights to put in hardware; convert the quantized model")
    n_in, n_out = int(input_shapes[0][-1]), int(cfg["units"])
    kernel = _weights(data_reader, layer["name"], "kernel", (n_in, n_out))
    norm = _weights(data_reader, layer["name"], "norm", (n_in,))
    tw = quantize_weights(kernel.T)                    # the reference's own quantiser: (out, in)
    layer.update(n_in=n_in, n_out=n_out, norm_data=norm, gamma=float(tw.gamma),
                 packed_data=pack_ternary(tw.w_q, PACKING_LAYOUT))
    return layer, [input_shapes[0][0], n_out]


def parse_rmsnorm(keras_layer, input_names, input_shapes, data_reader):
    layer = _base(keras_layer, input_names)
    n = int(input_shapes[0][-1])
    layer.update(n_in=n, eps=float(keras_layer["config"]["eps"]),
                 weight_data=_weights(data_reader, layer["name"], "weight", (n,)))
    return layer, list(input_shapes[0])


def parse_gated_rmsnorm(keras_layer, input_names, input_shapes, data_reader):
    layer = _base(keras_layer, input_names)
    cfg = keras_layer["config"]
    if int(cfg.get("num_heads", 1)) != 1:
        raise ConversionError(f"{layer['name']}: the HLS gated RMSNorm normalises one head; "
                              f"num_heads = {cfg['num_heads']} is not supported (use num_heads: 1)")
    n = int(input_shapes[0][-1])
    layer.update(n_in=n, eps=float(cfg["eps"]), weight_data=_weights(data_reader, layer["name"], "weight", (n,)))
    return layer, list(input_shapes[0])


def parse_mlgru_cell(keras_layer, input_names, input_shapes, data_reader):
    layer = _base(keras_layer, input_names)
    n = int(input_shapes[0][-1])
    if len(input_shapes) != 3 or any(int(s[-1]) != n for s in input_shapes):
        raise ConversionError(f"{layer['name']}: MLGRUCell takes [i_pre, f_pre, state_prev] of equal width")
    layer.update(n_state=n, use_lower_bound=bool(keras_layer["config"].get("use_lower_bound", False)),
                 lower_bound_data=_weights(data_reader, layer["name"], "lower_bound", (n,)))
    return layer, list(input_shapes[0])


def parse_glu(keras_layer, input_names, input_shapes, data_reader):
    layer = _base(keras_layer, input_names)
    n = int(input_shapes[0][-1])
    if n % 2:
        raise ConversionError(f"{layer['name']}: GLU input width {n} is odd; it must hold gate and up halves")
    layer.update(n_out=n // 2)
    return layer, [input_shapes[0][0], n // 2]


HANDLERS = {"BitLinear": parse_bitlinear, "RMSNorm": parse_rmsnorm, "GatedRMSNorm": parse_gated_rmsnorm,
            "MLGRUCell": parse_mlgru_cell, "GLU": parse_glu}


# ================================================================== write pass
def write_packed_weights(model) -> bool:
    """Writer pass: firmware/weights/tw<index>.h for every BitLinear of the model."""
    out = Path(model.config.get_output_dir()) / "firmware" / "weights"
    out.mkdir(parents=True, exist_ok=True)
    namespace = model.config.get_writer_config().get("Namespace", None)
    for node in model.get_layers():
        if node.class_name == "MMFreeBitLinear":
            var = f"tw{node.index}"
            text = packed_weights_header(var, node.get_attr("packed_data"),
                                         (node.get_attr("n_out"), node.get_attr("n_in")), node.name, namespace)
            (out / f"{var}.h").write_text(text)
    return False


# ================================================================== register
def register(backends=BACKENDS) -> None:
    """Register handlers, layers, templates, headers and the write pass with hls4ml (idempotent)."""
    import hls4ml
    from hls4ml.converters.keras_v2_to_hls import get_layer_handlers, register_keras_v2_layer_handler
    from hls4ml.model.flow import update_flow
    from hls4ml.model.layers import layer_map, register_layer
    from hls4ml.model.optimizer import ModelOptimizerPass

    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _hls4ml_classes()
    layers, templates = _CLASSES

    for keras_name, handler in HANDLERS.items():
        if keras_name not in get_layer_handlers():
            register_keras_v2_layer_handler(keras_name, handler)
        if layer_map.get(keras_name) is not layers[keras_name]:
            register_layer(keras_name, layers[keras_name])

    for name in backends:
        if name in _REGISTERED:
            continue
        backend = hls4ml.backends.get_backend(name)
        for t in templates:
            backend.register_template(t)
        for h in HEADERS:
            backend.register_source(HEADER_DIR / h)
        pass_name = "mmfree_write_packed_weights"
        backend.register_pass(pass_name, ModelOptimizerPass(pass_name, write_packed_weights))
        update_flow(f"{name.lower()}:write", add_optimizers=[f"{name.lower()}:{pass_name}"])
        _REGISTERED.add(name)
