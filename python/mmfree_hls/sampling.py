"""Next-token choice on the CPU side: greedy, temperature, top-k, top-p.

The accelerator returns logits; which token comes next is a host decision so
it can change per call without resynthesis. Everything here is numpy and
deterministic given a seed (one ``numpy.random.Generator`` per ``Sampler``).

    greedy       t = argmax(z)                                  (temperature 0)
    temperature  p = softmax(z / T)
    top-k        keep the k largest logits, renormalise
    top-p        keep the smallest set of tokens (most probable first) whose
                 probability mass reaches p ("nucleus"), renormalise

top-k is applied before top-p, as in common LM toolkits.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


class SamplingError(ValueError):
    """A sampling parameter or a logits vector that cannot be sampled from."""


def check_params(temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None) -> None:
    """Raise SamplingError with the valid range for any bad parameter."""
    if temperature is None or not np.isfinite(temperature) or temperature < 0:
        raise SamplingError(f"temperature must be ≥ 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise SamplingError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (0.0 < float(top_p) <= 1.0):
        raise SamplingError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def _check_logits(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 1 or z.size == 0:
        raise SamplingError(f"logits must be a non-empty 1-D vector, got shape {z.shape}")
    if not np.isfinite(z).all():
        bad = int(np.flatnonzero(~np.isfinite(z))[0])
        raise SamplingError(f"logits contain a non-finite value at index {bad} ({z[bad]}); "
                            "the accelerator output is invalid (check the precision config)")
    return z


def filtered_probs(logits: np.ndarray, temperature: float, top_k: Optional[int] = None,
                   top_p: Optional[float] = None) -> np.ndarray:
    """The distribution actually sampled from: softmax(z/T) after top-k and top-p.

    Zero for every token the filters removed; sums to 1.
    """
    check_params(temperature, top_k, top_p)
    if temperature == 0:
        raise SamplingError("temperature 0 is greedy decoding: there is no distribution")
    z = _check_logits(logits) / temperature
    keep = np.ones(z.size, dtype=bool)
    if top_k is not None and top_k < z.size:
        # Stable sort: among equal logits the lower id wins, so results never
        # depend on argpartition's unspecified tie order.
        order = np.argsort(-z, kind="stable")
        keep[:] = False
        keep[order[:top_k]] = True
    z = np.where(keep, z, -np.inf)
    p = np.exp(z - z[keep].max())
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        # Smallest prefix whose mass reaches top_p; the most probable token is always kept.
        n_keep = int(np.searchsorted(cum, top_p, side="left")) + 1
        nucleus = np.zeros(z.size, dtype=bool)
        nucleus[order[:n_keep]] = True
        p = np.where(nucleus, p, 0.0)
        p /= p.sum()
    return p


class Sampler:
    """Chooses the next token from logits; one seeded generator per instance.

    ``Sampler(temperature=0)`` is greedy (top_k / top_p are then irrelevant).
    Two samplers with the same parameters and seed give the same token stream
    for the same logits.
    """

    def __init__(self, temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, seed: Optional[int] = None):
        check_params(temperature, top_k, top_p)
        self.temperature = float(temperature)
        self.top_k = None if top_k is None else int(top_k)
        self.top_p = None if top_p is None else float(top_p)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def __call__(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(np.argmax(_check_logits(logits)))
        p = filtered_probs(logits, self.temperature, self.top_k, self.top_p)
        # Inverse-CDF draw: one uniform per token, so the stream depends only on the seed.
        u = self.rng.random()
        idx = int(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"))
        idx = min(idx, p.size - 1)
        while p[idx] == 0.0:          # guard against rounding landing on a removed token
            idx -= 1
        return idx

    def __repr__(self) -> str:
        return (f"Sampler(temperature={self.temperature}, top_k={self.top_k}, "
                f"top_p={self.top_p}, seed={self.seed})")


def sample(logits: np.ndarray, temperature: float = 0.0, top_k: Optional[int] = None,
           top_p: Optional[float] = None, rng: Optional[np.random.Generator] = None) -> int:
    """One-shot form of :class:`Sampler` (pass ``rng`` to control randomness)."""
    s = Sampler(temperature, top_k, top_p)
    if rng is not None:
        s.rng = rng
    return s(logits)
