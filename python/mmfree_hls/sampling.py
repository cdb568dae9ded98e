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

The engine can also return, per lane, just its K largest logits (``topk`` of
the preset): values descending, ties to the lower id (:func:`top_k_of` is the
numpy twin). Greedy decoding, and sampling with ``top_k ≤ K``, need nothing
more (:meth:`Sampler.needs_full_logits`); :meth:`Sampler.choose_from_top` then
picks exactly the token that ``Sampler(...)(full_logits)`` would pick, with the
same random draw.

Numerically safe at any temperature: probabilities are computed in float64
from ``(z - max z) / T`` (log-space, so the largest term is exactly exp(0) = 1
and nothing overflows), and a temperature below :data:`GREEDY_BELOW` is
decoded greedily -- the limit of softmax(z/T) as T -> 0 (ties aside), with no
random draw.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np


class SamplingError(ValueError):
    """A sampling parameter or a logits vector that cannot be sampled from."""


#: Temperatures below this are greedy decoding (argmax): softmax(z/T) is one-hot to
#: within float64 for any logit gap a model produces, so no draw is made.
GREEDY_BELOW = 1e-6


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_params(temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None) -> None:
    """Raise SamplingError with the valid range for any bad parameter."""
    if not _is_real(temperature) or not np.isfinite(temperature) or temperature < 0:
        raise SamplingError(f"temperature must be a finite number ≥ 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise SamplingError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not (_is_real(top_p) and 0.0 < float(top_p) <= 1.0):
        raise SamplingError(f"top_p must be in (0, 1] (a number) or None, got {top_p!r}")


def check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise SamplingError(f"seed must be a non-negative integer or None, got {seed!r}")


def _check_logits(logits: np.ndarray) -> np.ndarray:
    # float32 stays float32 (the device's dtype): the O(V) passes below run twice as
    # fast as in float64, which matters on a board's CPU; sums are taken in float64.
    z = np.asarray(logits)
    if z.dtype not in (np.float32, np.float64):
        z = z.astype(np.float64)
    if z.ndim != 1 or z.size == 0:
        raise SamplingError(f"logits must be a non-empty 1-D vector, got shape {z.shape}")
    if not np.isfinite(z).all():
        bad = int(np.flatnonzero(~np.isfinite(z))[0])
        raise SamplingError(f"logits contain a non-finite value at index {bad} ({z[bad]}); "
                            "the accelerator output is invalid (check the precision config)")
    return z


def _top_k_ids(z: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits, ascending; ties at the cut go to the lowest ids.

    O(V) with a partition instead of a full sort: this runs once per token on
    the board's CPU, where sorting 32000 logits costs milliseconds.
    """
    n = z.size
    kth = np.partition(z, n - k)[n - k]
    above = np.flatnonzero(z > kth)
    ties = np.flatnonzero(z == kth)[: k - above.size]
    return np.sort(np.concatenate([above, ties]))


def top_k_of(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The device's top-k of one logits vector, or of each row of (N, V) lanes.

    Returns (values, ids): the ``min(k, V)`` largest logits in descending order,
    equal values by ascending id (the order ``np.argmax`` and :func:`_top_k_ids`
    break ties in); values keep the logits' dtype (float32 from the device), ids int64.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SamplingError(f"k must be a positive integer, got {k!r}")
    z = np.asarray(logits)
    if z.ndim == 2 and z.shape[0] > 0:
        rows = [top_k_of(row, k) for row in z]
        return np.stack([v for v, _ in rows]), np.stack([i for _, i in rows])
    z = _check_logits(z)
    ids = _top_k_ids(z, min(int(k), z.size))
    order = np.lexsort((ids, -z[ids]))          # value descending, then id ascending
    return z[ids[order]], ids[order].astype(np.int64)


def _check_top(values: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = _check_logits(values)
    i = np.asarray(ids)
    if i.shape != v.shape or not np.issubdtype(i.dtype, np.integer):
        raise SamplingError(f"top-k ids must be integers of the values' shape {v.shape}, "
                            f"got {i.dtype} {i.shape}")
    if (i < 0).any() or np.unique(i).size != i.size:
        raise SamplingError("top-k ids must be distinct non-negative token ids")
    if (np.diff(v) > 0).any():
        raise SamplingError("top-k values must be in descending order (as the device writes them)")
    return v, i.astype(np.int64)


def _nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """Mask of the smallest set of most probable entries whose mass reaches top_p.

    Order: probability descending, id ascending among equals. Only the head of
    the distribution is sorted (grown ×8 until it holds the nucleus), since a
    language model's nucleus is usually a few tokens out of thousands.
    """
    n = p.size
    m = min(n, 64)
    while True:
        if m >= n:
            sel = np.arange(n)
        else:
            sel = np.flatnonzero(p >= np.partition(p, n - m)[n - m])
        order = sel[np.lexsort((sel, -p[sel]))]
        cum = np.cumsum(p[order], dtype=np.float64)
        if cum[-1] >= top_p or sel.size == n:
            # Smallest prefix whose mass reaches top_p; the most probable entry is always kept.
            n_keep = min(int(np.searchsorted(cum, top_p, side="left")) + 1, order.size)
            mask = np.zeros(n, dtype=bool)
            mask[order[:n_keep]] = True
            return mask
        m *= 8


def _candidates(logits: np.ndarray, temperature: float, top_k: Optional[int],
                top_p: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """(ids ascending, probabilities) of the tokens that survive the filters."""
    z = _check_logits(logits)
    # top-k on the raw logits: dividing by T > 0 does not change their order.
    ids = _top_k_ids(z, top_k) if top_k is not None and top_k < z.size else None
    return _filter(ids, z if ids is None else z[ids], temperature, top_p)


def _filter(ids: Optional[np.ndarray], zk: np.ndarray, temperature: float,
            top_p: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """softmax(zk / T), then top-p: (ids ascending, probabilities).

    ``ids``: the top-k ids (ascending) whose logits are ``zk``, or None for the whole
    vocabulary. Shared by the full-logits and the device-top-k paths, so both do the
    same arithmetic on the same arrays.
    """
    zk = np.asarray(zk, dtype=np.float64)
    p = np.exp((zk - zk.max()) / temperature)        # ≤ 0 before the division: no overflow, no NaN
    p = p / p.sum()
    if top_p is not None and top_p < 1.0:
        keep = _nucleus(p, top_p)
        ids = np.flatnonzero(keep) if ids is None else ids[keep]
        p = p[keep]
    elif ids is None:
        ids = np.arange(zk.size)
    p = p.astype(np.float64)
    return ids, p / p.sum()


def filtered_probs(logits: np.ndarray, temperature: float, top_k: Optional[int] = None,
                   top_p: Optional[float] = None) -> np.ndarray:
    """The distribution actually sampled from: softmax(z/T) after top-k and top-p.

    Zero for every token the filters removed; sums to 1.
    """
    check_params(temperature, top_k, top_p)
    if temperature == 0:
        raise SamplingError("temperature 0 is greedy decoding: there is no distribution")
    if temperature < GREEDY_BELOW:                    # the greedy limit: all mass on the argmax
        full = np.zeros(np.size(logits))
        full[int(np.argmax(_check_logits(logits)))] = 1.0
        return full
    ids, p = _candidates(logits, temperature, top_k, top_p)
    full = np.zeros(np.size(logits))
    full[ids] = p
    return full


class Sampler:
    """Chooses the next token from logits; one seeded generator per instance.

    ``Sampler(temperature=0)`` is greedy (top_k / top_p are then irrelevant).
    Two samplers with the same parameters and seed give the same token stream
    for the same logits.
    """

    def __init__(self, temperature: float = 0.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, seed: Optional[int] = None):
        check_params(temperature, top_k, top_p)
        check_seed(seed)
        self.temperature = float(temperature)
        self.top_k = None if top_k is None else int(top_k)
        self.top_p = None if top_p is None else float(top_p)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def greedy(self) -> bool:
        """True for temperature 0 and any temperature below :data:`GREEDY_BELOW`."""
        return self.temperature < GREEDY_BELOW

    def needs_full_logits(self, device_topk: int) -> bool:
        """Whether the next choice needs all V logits, given the device's top-``device_topk``.

        False for greedy decoding (the first entry is the argmax) and for
        ``top_k ≤ device_topk`` (top-k, then top-p, only ever look at the k largest).
        """
        return not (self.greedy or (self.top_k is not None and self.top_k <= device_topk))

    def choose_from_top(self, values: np.ndarray, ids: np.ndarray) -> int:
        """The next token from the device's top-K of one lane: (values descending, ids).

        Exactly the token ``self(full_logits)`` returns, with the same random draw
        (same candidates, ids ascending, same probabilities). Greedy: ``ids[0]``.
        Needs ``not self.needs_full_logits(K)``, else raises SamplingError.
        """
        values, ids = _check_top(values, ids)
        if self.greedy:
            return int(ids[0])
        if self.needs_full_logits(values.size):
            raise SamplingError(f"{self!r} needs the full logits: the device returned only the "
                                f"top {values.size} (sampling from them needs top_k ≤ {values.size})")
        k = self.top_k
        order = np.argsort(ids[:k], kind="stable")      # the top k by id ascending, as _top_k_ids
        return self._draw(*_filter(ids[:k][order], values[:k][order], self.temperature, self.top_p))

    def __call__(self, logits: np.ndarray) -> int:
        if self.greedy:
            return int(np.argmax(_check_logits(logits)))
        return self._draw(*_candidates(logits, self.temperature, self.top_k, self.top_p))

    def _draw(self, ids: np.ndarray, p: np.ndarray) -> int:
        # Inverse-CDF draw over the surviving ids (ascending): one uniform per token,
        # so the stream depends only on the seed.
        cdf = np.cumsum(p, dtype=np.float64)
        idx = min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")), p.size - 1)
        while p[idx] == 0.0 and idx > 0:      # exp underflow: never pick a zero-probability token
            idx -= 1
        return int(ids[idx])

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


def greedy_decode(step: Callable[[int], np.ndarray], prompt: Iterable[int], n_new: int,
                  margins: Optional[list] = None) -> list[int]:
    """The greedy loop every path shares: feed ``prompt`` through ``step(token) -> logits``
    (a closure that carries its own state: the reference, a C-sim, the accelerator), then
    append the argmax ``n_new`` times. The logits after the last new token are never needed,
    so ``step`` runs ``len(prompt) + n_new - 1`` times. ``margins``, if a list, receives the
    top-1 minus top-2 logit of each choice (how close the path came to a tie)."""
    prompt = list(prompt)
    if not prompt:
        raise ValueError("prompt is empty: give at least one token id")
    for tok in prompt:
        logits = step(tok)
    out: list[int] = []
    for i in range(n_new):
        if margins is not None:
            top2 = np.partition(np.asarray(logits), -2)[-2:]
            margins.append(float(top2[1] - top2[0]))
        out.append(int(np.argmax(logits)))
        if i + 1 < n_new:
            logits = step(out[-1])
    return out
