"""BitLinear quantisation in numpy: the integer arithmetic every other path
(QKeras, HLS C++) is checked against.

    x̂   = rms(x; n, 1e-8)
    s   = 127 / max(max|x̂|, 1e-5)            per token
    x_q = clip(round(x̂ · s), -128, 127)      int8
    γ   = 1 / max(mean|W|, 1e-5)              per tensor
    W_q = clip(round(W · γ), -1, 1)           ternary
    y   = (x_q · W_qᵀ) / (s · γ)              int32 accumulate, one rescale
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import (ACT_ABSMAX_FLOOR, ACT_QMAX, ACT_QMIN, BITLINEAR_NORM_EPS,
                     WEIGHT_ABSMEAN_FLOOR)


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) ⊙ weight, over the last axis (float64 inside)."""
    x64 = np.asarray(x, dtype=np.float64)
    y = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    return y


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def quantize_activations(x_hat: np.ndarray, qmax: int = ACT_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """Per-token absmax, int8 by default (qmax = 2^(bits-1) - 1 for narrower activations).
    Returns (x_q int8, s float64 with a trailing axis of 1)."""
    absmax = np.max(np.abs(x_hat), axis=-1, keepdims=True)
    s = qmax / np.maximum(absmax, ACT_ABSMAX_FLOOR)
    x_q = np.clip(np.round(x_hat * s), -qmax - 1, qmax).astype(np.int8)
    return x_q, s


@dataclass(frozen=True)
class TernaryWeight:
    """A BitLinear weight after quantisation: W ≈ w_q / gamma."""

    w_q: np.ndarray        # int8 in {-1, 0, 1}, shape (out, in)
    gamma: float           # γ = 1 / max(mean|W|, 1e-5)

    @property
    def scale(self) -> float:
        """1/γ: the dequantisation scale that multiplies the accumulator."""
        return 1.0 / self.gamma

    @property
    def shape(self) -> tuple[int, int]:
        return self.w_q.shape


def quantize_weights(w: np.ndarray) -> TernaryWeight:
    w64 = np.asarray(w, dtype=np.float64)
    gamma = 1.0 / max(float(np.mean(np.abs(w64))), WEIGHT_ABSMEAN_FLOOR)
    w_q = np.clip(np.round(w64 * gamma), -1, 1).astype(np.int8)
    return TernaryWeight(w_q=w_q, gamma=gamma)


def ternary_accumulate(x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """int8 activations × ternary weights summed in int32: add, subtract or skip.

    Written as an integer matmul because numpy has no faster way to add and
    subtract; the result is the exact integer sum the hardware computes.
    """
    return x_q.astype(np.int32) @ w_q.T.astype(np.int32)


def bitlinear(x: np.ndarray, norm_weight: np.ndarray, w: TernaryWeight, qmax: int = ACT_QMAX) -> np.ndarray:
    """The BitLinear forward in integers: norm, quantise, accumulate, one rescale."""
    x_hat = rms_norm(x, norm_weight, BITLINEAR_NORM_EPS)
    x_q, s = quantize_activations(x_hat, qmax)
    acc = ternary_accumulate(x_q, w.w_q)
    return acc / (s * w.gamma)
