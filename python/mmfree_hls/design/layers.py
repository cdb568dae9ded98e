"""Keras 2 / QKeras layers of the MatMul-free LM.

Each layer is the float, trainable twin of a block the hardware computes:
BitLinear carries two QKeras quantizers (per-token absmax int8 activations,
per-tensor absmean ternary weights) with the straight-through estimator, so
training sees exactly the rounding the integer path does, and gradients flow
as if the rounding were the identity (Zhu et al. 2024, sec. 3.1).

These layer classes are also what the hls4ml extension handlers recognise
(``mmfree_hls.design.hls_layers``), one handler per class.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from qkeras.quantizers import BaseQuantizer
from tensorflow import keras

from ..config import (ACT_ABSMAX_FLOOR, BITLINEAR_NORM_EPS,
                      WEIGHT_ABSMEAN_FLOOR)


def _ste(x, q):
    """Straight-through estimator: forward q, backward identity."""
    return x + tf.stop_gradient(q - x)


def rms(x, weight, eps):
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x * tf.sigmoid(x)


# ----------------------------------------------------------------- quantizers
class _STEQuantizer(BaseQuantizer):
    """A QKeras quantizer whose forward rounds and whose backward is the identity.

    Values come back dequantised (q / scale), so downstream float code sees
    what the integer path computes; ``max``/``min`` are the normalised range.
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        self.keep_negative = True

    def max(self):
        return 1.0

    def min(self):
        return -1.0

    def get_config(self):
        return {}


class AbsMeanTernary(_STEQuantizer):
    """W → clip(round(W·γ), −1, 1) / γ with γ = 1 / max(mean|W|, 1e-5), per tensor."""

    def __init__(self):
        super().__init__(bits=2)

    def scale(self, w):
        return 1.0 / tf.maximum(tf.reduce_mean(tf.abs(w)), WEIGHT_ABSMEAN_FLOOR)

    def __call__(self, w):
        w = tf.convert_to_tensor(w)
        gamma = self.scale(w)
        return _ste(w, tf.clip_by_value(tf.round(w * gamma), -1.0, 1.0) / gamma)


class AbsMaxInt8(_STEQuantizer):
    """x̂ → clip(round(x̂·s), −Q−1, Q) / s with s = Q / max(max|x̂|, 1e-5), per token;
    Q = 127 for the reference's int8, 2^(bits−1) − 1 for narrower activations."""

    def __init__(self, bits: int = 8):
        super().__init__(bits=bits)
        self.qmax = (1 << (bits - 1)) - 1

    def scale(self, x):
        return self.qmax / tf.maximum(tf.reduce_max(tf.abs(x), axis=-1, keepdims=True), ACT_ABSMAX_FLOOR)

    def __call__(self, x):
        s = self.scale(x)
        return _ste(x, tf.clip_by_value(tf.round(x * s), -self.qmax - 1.0, float(self.qmax)) / s)


# --------------------------------------------------------------------- layers
class RMSNorm(keras.layers.Layer):
    """x / sqrt(mean(x²) + ε) ⊙ weight."""

    def __init__(self, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(int(input_shape[-1]),), initializer="ones")
        super().build(input_shape)

    def call(self, x):
        return rms(x, self.weight, self.eps)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


class BitLinear(keras.layers.Layer):
    """y = Q8(rms(x; norm)) · Q3(W) — ternary weights, int8 activations, one rescale.

    ``kernel`` is (in, out) as in Keras (the reference weight transposed);
    ``norm`` is the BitLinear's own RMSNorm weight (ε = 1e-8).
    """

    def __init__(self, units: int, quantize: bool = True, act_bits: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        # quantize=False gives the full-precision twin (same norm, same shapes)
        # used to measure what ternary weights cost in perplexity.
        self.quantize = bool(quantize)
        self.act_bits = int(act_bits)
        self.weight_quantizer = AbsMeanTernary()
        self.activation_quantizer = AbsMaxInt8(self.act_bits)

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        self.norm = self.add_weight(name="norm", shape=(n_in,), initializer="ones")
        self.kernel = self.add_weight(name="kernel", shape=(n_in, self.units),
                                      initializer=keras.initializers.RandomNormal(stddev=n_in ** -0.5))
        super().build(input_shape)

    def call(self, x):
        x_hat = rms(x, self.norm, BITLINEAR_NORM_EPS)
        w = self.kernel
        if self.quantize:
            x_hat, w = self.activation_quantizer(x_hat), self.weight_quantizer(w)
        if x.shape.rank == 2:
            return tf.matmul(x_hat, w)
        # Flatten leading axes into one matmul: TF's einsum gradient with an
        # ellipsis is two orders of magnitude slower on CPU.
        y = tf.matmul(tf.reshape(x_hat, (-1, tf.shape(x_hat)[-1])), w)
        return tf.reshape(y, tf.concat([tf.shape(x_hat)[:-1], [self.units]], 0))

    def ternary(self) -> tuple[np.ndarray, float]:
        """(W_q int8 (out, in), γ): the weights as the hardware stores them."""
        from ..quant import quantize_weights
        tw = quantize_weights(self.kernel.numpy().T)
        return tw.w_q, tw.gamma

    def get_config(self):
        return {**super().get_config(), "units": self.units, "quantize": self.quantize,
                "act_bits": self.act_bits}


def mlgru_gates(i_pre, f_pre, lower_bound, use_lower_bound: bool):
    """MLGRU input and forget gates: (silu(i)·(1−f), f), f = lb + (1−lb)·σ(f_pre)."""
    f = tf.sigmoid(f_pre)
    if use_lower_bound:
        f = lower_bound + (1.0 - lower_bound) * f
    return silu(i_pre) * (1.0 - f), f


class MLGRUCell(keras.layers.Layer):
    """One decode step of the MLGRU: s_t = f ⊙ s_{t−1} + silu(i)·(1−f).

    Inputs ``[i_pre, f_pre, state_prev]``; output the new state. The layer's
    forget-gate lower bound ``lower_bound`` is a constant of the decode form
    (derived from the trained ``model.lower_bounds`` when the step model is built).
    It is held in float64, the reference's own values, so the engine written
    from the hls4ml graph rounds exactly the bounds the reference uses.
    """

    def __init__(self, use_lower_bound: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.use_lower_bound = bool(use_lower_bound)

    def build(self, input_shape):
        self.lower_bound = self.add_weight(name="lower_bound", shape=(int(input_shape[0][-1]),),
                                           initializer="zeros", trainable=False, dtype="float64")
        super().build(input_shape)

    def call(self, inputs):
        i_pre, f_pre, s_prev = inputs
        lb = tf.cast(self.lower_bound, f_pre.dtype)
        i, f = mlgru_gates(i_pre, f_pre, lb, self.use_lower_bound)
        return f * s_prev + i

    def get_config(self):
        return {**super().get_config(), "use_lower_bound": self.use_lower_bound}


class MLGRUScan(keras.layers.Layer):
    """The MLGRU over a whole sequence (training form).

    Inputs ``[i_pre, f_pre, lower_bound]`` with (B, T, e) gates and the layer's
    bound (e,), which stays a function of the trainable ``lower_bounds``.
    Returns every state s_1..s_T, shape (B, T, e), starting from s_0 = 0.

    s_t = f_t ⊙ s_{t−1} + i_t is scanned over time exactly as written (the
    sequential scan is also the fastest form on a CPU for short windows).
    """

    def __init__(self, use_lower_bound: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.use_lower_bound = bool(use_lower_bound)

    def call(self, inputs):
        i_pre, f_pre, lower_bound = inputs
        i, f = mlgru_gates(i_pre, f_pre, lower_bound, self.use_lower_bound)
        i_t, f_t = tf.transpose(i, (1, 0, 2)), tf.transpose(f, (1, 0, 2))   # time-major
        states = tf.scan(lambda s, fi: fi[0] * s + fi[1], (f_t, i_t), initializer=tf.zeros_like(i_t[0]))
        return tf.transpose(states, (1, 0, 2))

    def get_config(self):
        return {**super().get_config(), "use_lower_bound": self.use_lower_bound}


class GatedRMSNorm(keras.layers.Layer):
    """o = rms(g; weight, ε) ⊙ silu(s), the MLGRU output gate.

    The norm runs over the whole recurrence width (heads merged), as in the reference.
    """

    def __init__(self, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(int(input_shape[0][-1]),), initializer="ones")
        super().build(input_shape)

    def call(self, inputs):
        g, s = inputs
        return rms(g, self.weight, self.eps) * silu(s)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


class GLU(keras.layers.Layer):
    """silu(gate) · up, where gate and up are the two halves of the input."""

    def call(self, u):
        gate, up = tf.split(u, 2, axis=-1)
        return silu(gate) * up

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (int(input_shape[-1]) // 2,)


CUSTOM_OBJECTS = {cls.__name__: cls for cls in
                  (RMSNorm, BitLinear, MLGRUCell, MLGRUScan, GatedRMSNorm, GLU, AbsMeanTernary, AbsMaxInt8)}
