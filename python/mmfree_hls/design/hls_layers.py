"""hls4ml extension layers of the MatMul-free LM.

hls4ml's extension API, once per building block (``register()`` does both):

* a Keras handler (``register_keras_v2_layer_handler``) reading a layer of
  :mod:`mmfree_hls.design.layers` -- the BitLinear handler quantises the
  kernel exactly like :func:`mmfree_hls.quant.quantize_weights`;
* an hls4ml ``Layer`` (``register_layer``) holding the sizes and the weights
  as weight variables of the graph:

  ============== ============================================================
  BitLinear      ``weight`` ternary W_q (out, in) int8, ``gamma`` (1,) float64,
                 ``norm`` its RMSNorm weight (in,)
  RMSNorm        ``weight`` (n,)
  GatedRMSNorm   ``weight`` (n,)
  MLGRUCell      ``lower_bound`` (n,) float64: the decode form's constant bound
  GLU            (no weights)
  ============== ============================================================

The ``MMFreeEngine`` backend (:mod:`mmfree_hls.design.hls4ml_backend`) reads
these variables back to write the engine project; no per-layer C++ is emitted.
"""

from __future__ import annotations

import numpy as np

from ..quant import quantize_weights


class ConversionError(ValueError):
    """A Keras layer or hls4ml graph the engine cannot express (the message names the layer)."""


# ====================================================================== hls4ml
_CLASSES: dict | None = None


def _hls4ml_classes() -> dict:
    """The hls4ml-dependent half of this module (imported lazily: hls4ml pulls in TensorFlow)."""
    from hls4ml.model.layers import Layer
    from hls4ml.model.types import IntegerPrecisionType, StandardFloatPrecisionType

    FLOAT = StandardFloatPrecisionType(32, 8)
    DOUBLE = StandardFloatPrecisionType(64, 11)
    TERNARY = IntegerPrecisionType(2, signed=True)

    class MMFreeLayer(Layer):
        def _weight(self, key: str, data: np.ndarray, precision) -> None:
            self.add_weights_variable(name=key, var_name=f"{key}{{index}}", type_name=f"{key}{{index}}_t",
                                      precision=precision, data=data)

    class MMFreeBitLinear(MMFreeLayer):
        def initialize(self):
            self.add_output_variable([self.get_attr("n_out")])
            self._weight("weight", self.get_attr("weight_data"), TERNARY)
            self._weight("gamma", np.array([self.get_attr("gamma")], np.float64), DOUBLE)
            self._weight("norm", self.get_attr("norm_data"), FLOAT)

    class MMFreeRMSNorm(MMFreeLayer):
        def initialize(self):
            self.add_output_variable([self.get_attr("n_in")])
            self._weight("weight", self.get_attr("weight_data"), FLOAT)

    class MMFreeGatedRMSNorm(MMFreeLayer):
        def initialize(self):
            self.add_output_variable([self.get_attr("n_in")])
            self._weight("weight", self.get_attr("weight_data"), FLOAT)

    class MMFreeMLGRUCell(MMFreeLayer):
        def initialize(self):
            self.add_output_variable([self.get_attr("n_state")])
            self._weight("lower_bound", self.get_attr("lower_bound_data"), DOUBLE)

    class MMFreeGLU(MMFreeLayer):
        def initialize(self):
            self.add_output_variable([self.get_attr("n_out")])

    return {"BitLinear": MMFreeBitLinear, "RMSNorm": MMFreeRMSNorm, "GatedRMSNorm": MMFreeGatedRMSNorm,
            "MLGRUCell": MMFreeMLGRUCell, "GLU": MMFreeGLU}


def layer_classes() -> dict:
    """Keras class name -> our hls4ml Layer class."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _hls4ml_classes()
    return _CLASSES


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
    if not np.all(np.isfinite(w)):
        raise ConversionError(f"Keras layer {layer_name}: weight '{var}' holds NaN or Inf")
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
    # (out, in) in C order, as the reference holds it: the same γ to the last bit
    tw = quantize_weights(np.ascontiguousarray(kernel.T))
    layer.update(n_in=n_in, n_out=n_out, weight_data=tw.w_q, gamma=float(tw.gamma),
                 norm_data=_weights(data_reader, layer["name"], "norm", (n_in,)))
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
        raise ConversionError(f"{layer['name']}: the engine's gated RMSNorm normalises one head; "
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


# ================================================================== register
def register() -> None:
    """Register the Keras handlers and hls4ml layers with hls4ml (idempotent)."""
    from hls4ml.converters.keras_v2_to_hls import get_layer_handlers, register_keras_v2_layer_handler
    from hls4ml.model.layers import layer_map, register_layer

    layers = layer_classes()
    for keras_name, handler in HANDLERS.items():
        if keras_name not in get_layer_handlers():
            register_keras_v2_layer_handler(keras_name, handler)
        if layer_map.get(keras_name) is not layers[keras_name]:
            register_layer(keras_name, layers[keras_name])
