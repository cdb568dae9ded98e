"""The MatMul-free LM in numpy, read top to bottom like the paper.

This is the golden model: every BitLinear runs in integers (int8 × ternary
accumulated in int32, one float rescale), everything else in float64. The
QKeras model, the HLS C-simulation and the board are all checked against it.

Block l, residual stream x (Zhu et al. 2024, eqs. for MLGRU and GLU):

    h   = rms(x; attn_norm)
    i   = BitLinear_i(h);   f = σ(BitLinear_f(h));   f = lb_l + (1 − lb_l)·f  (l > 0)
    i   = silu(i) · (1 − f)
    s_t = f_t ⊙ s_{t−1} + i_t
    o   = rms(BitLinear_g(h); g_norm) ⊙ silu(s_t)
    x   = x + BitLinear_o(o)
    gate, up = split(BitLinear_gate(rms(x; mlp_norm)))
    x   = x + BitLinear_down(silu(gate) · up)

    logits = BitLinear_head(rms(x; norm))
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from .config import ModelConfig
from .quant import (TernaryWeight, bitlinear, quantize_weights, rms_norm,
                    sigmoid, silu)
from .sampling import greedy_decode

# Projections of a block, in the order the hardware evaluates them.
ATTN_PROJS = ("i_proj", "f_proj", "g_proj", "o_proj")
MLP_PROJS = ("gate_proj", "down_proj")


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the reference layout and its shape."""
    d, e, m, V = cfg.d, cfg.input_dim, cfg.ffn_dim, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"model.embeddings.weight": (V, d)}
    if cfg.use_lower_bound:
        shapes["model.lower_bounds"] = (cfg.num_hidden_layers, e)
    proj = {"i_proj": (e, d), "f_proj": (e, d), "g_proj": (e, d), "o_proj": (d, e),
            "gate_proj": (2 * m, d), "down_proj": (d, m)}
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        shapes[p + "attn_norm.weight"] = (d,)
        for name in ATTN_PROJS:
            shapes[p + f"attn.{name}.weight"] = proj[name]
            shapes[p + f"attn.{name}.norm.weight"] = (proj[name][1],)
        shapes[p + "attn.g_norm.weight"] = (e,)
        shapes[p + "mlp_norm.weight"] = (d,)
        for name in MLP_PROJS:
            shapes[p + f"mlp.{name}.weight"] = proj[name]
            shapes[p + f"mlp.{name}.norm.weight"] = (proj[name][1],)
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (V, d)
    shapes["lm_head.norm.weight"] = (d,)
    return shapes


def bitlinear_names(cfg: ModelConfig) -> list[str]:
    """Prefixes of every BitLinear, in evaluation order (head last)."""
    names = []
    for l in range(cfg.num_hidden_layers):
        names += [f"model.layers.{l}.attn.{p}" for p in ATTN_PROJS]
        names += [f"model.layers.{l}.mlp.{p}" for p in MLP_PROJS]
    return names + ["lm_head"]


def lower_bounds(raw: np.ndarray) -> np.ndarray:
    """lb = cumsum(softmax(raw, layers)) − p[0]; row 0 is unused (layer 0 has no bound)."""
    z = raw.astype(np.float64)
    p = np.exp(z - z.max(axis=0, keepdims=True))
    p /= p.sum(axis=0, keepdims=True)
    return np.cumsum(p, axis=0) - p[0]


def init_random_state_dict(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in the reference layout (for tests, benchmarks and sweeps)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for key, shape in expected_shapes(cfg).items():
        if key.endswith("norm.weight"):
            sd[key] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        elif key == "model.lower_bounds":
            sd[key] = rng.standard_normal(shape).astype(np.float32)
        else:
            sd[key] = (rng.standard_normal(shape) * shape[-1] ** -0.5).astype(np.float32)
    return sd


class MMFreeLM:
    """numpy MatMul-free LM: sequence ``logits``, recurrent ``step`` / ``decode_step``
    (one token, or a batch of B sequences) and chunked ``prefill`` (T tokens of one
    sequence per call, as the engine's prefill pass)."""

    def __init__(self, config: ModelConfig, state_dict: Mapping[str, np.ndarray],
                 ternary: Mapping[str, TernaryWeight] | None = None):
        """``ternary``: pre-quantised BitLinear weights (e.g. from a packed
        checkpoint); then ``state_dict`` need not hold their float weights in
        memory — a lazy mapping that reads them on demand is enough."""
        self.config = config.validate()
        self.params = (state_dict if ternary is not None
                       else {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()})
        names = bitlinear_names(config)
        missing = sorted(set(expected_shapes(config)) - set(self.params))
        if ternary is not None:
            missing = sorted(set(missing) - {n + ".weight" for n in names}
                             | {n + ".weight" for n in names if n not in ternary})
        if missing:
            raise KeyError(f"state dict is missing keys: {', '.join(missing[:8])}"
                           + (" ..." if len(missing) > 8 else ""))
        # Ternary weights are quantised once, as the hardware stores them.
        self.ternary: dict[str, TernaryWeight] = (
            dict(ternary) if ternary is not None
            else {name: quantize_weights(self.params[name + ".weight"]) for name in names})
        cfg = self.config
        self.lb = (lower_bounds(self.params["model.lower_bounds"]) if cfg.use_lower_bound
                   else np.zeros((cfg.num_hidden_layers, cfg.input_dim)))

    @classmethod
    def from_ternary(cls, config: ModelConfig, params: Mapping[str, np.ndarray],
                     ternary: Mapping[str, TernaryWeight]) -> "MMFreeLM":
        """A model from already-quantised BitLinear weights (no float copy needed)."""
        return cls(config, params, ternary)

    # ---------------------------------------------------------------- pieces
    def bitlinear(self, name: str, x: np.ndarray) -> np.ndarray:
        return bitlinear(x, self.params[name + ".norm.weight"], self.ternary[name], self.config.act_qmax)

    def _rms(self, x: np.ndarray, key: str) -> np.ndarray:
        return rms_norm(x, self.params[key], self.config.rms_norm_eps)

    def _g_norm(self, g: np.ndarray, l: int) -> np.ndarray:
        """RMSNorm of the output gate over the whole recurrence width.

        The reference merges heads before g_norm, so num_heads never changes
        the math (the recurrence is element-wise).
        """
        return self._rms(g, f"model.layers.{l}.attn.g_norm.weight")

    def _gates(self, l: int, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input and forget gates of the MLGRU: (silu(i)·(1−f), f)."""
        p = f"model.layers.{l}.attn."
        i = self.bitlinear(p + "i_proj", h)
        f = sigmoid(self.bitlinear(p + "f_proj", h))
        if l > 0 and self.config.use_lower_bound:
            f = self.lb[l] + (1.0 - self.lb[l]) * f
        return silu(i) * (1.0 - f), f

    def _mix_out(self, l: int, h: np.ndarray, s: np.ndarray) -> np.ndarray:
        p = f"model.layers.{l}.attn."
        o = self._g_norm(self.bitlinear(p + "g_proj", h), l) * silu(s)
        return self.bitlinear(p + "o_proj", o)

    def _channel_mix(self, l: int, x: np.ndarray) -> np.ndarray:
        p = f"model.layers.{l}."
        u = self.bitlinear(p + "mlp.gate_proj", self._rms(x, p + "mlp_norm.weight"))
        gate, up = np.split(u, 2, axis=-1)
        return self.bitlinear(p + "mlp.down_proj", silu(gate) * up)

    def head(self, x: np.ndarray) -> np.ndarray:
        return self.bitlinear("lm_head", self._rms(x, "model.norm.weight"))

    def embed(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids)
        V = self.config.vocab_size
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            bad = ids[(ids < 0) | (ids >= V)].ravel()[0]
            raise ValueError(f"token id {int(bad)} is out of range for vocab_size={V} "
                             f"(valid ids are 0..{V - 1}); check the tokenizer matches the model")
        return self.params["model.embeddings.weight"][ids].astype(np.float64)

    # ------------------------------------------------------------- sequence
    def logits(self, input_ids) -> np.ndarray:
        """(B, T) token ids → (B, T, V) logits, state starting at zero."""
        ids = np.asarray(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"input_ids must have shape (B, T) with T ≥ 1, got {np.shape(input_ids)}")
        x = self.embed(ids)
        for l in range(self.config.num_hidden_layers):
            h = self._rms(x, f"model.layers.{l}.attn_norm.weight")
            i, f = self._gates(l, h)
            s = np.zeros_like(i[:, 0])
            states = np.empty_like(i)
            for t in range(ids.shape[1]):           # the only sequential part
                s = f[:, t] * s + i[:, t]
                states[:, t] = s
            x = x + self._mix_out(l, h, states)
            x = x + self._channel_mix(l, x)
        return self.head(x)

    # --------------------------------------------------------------- decode
    def init_state(self, batch: int | None = None) -> np.ndarray:
        """Zero recurrent state: (L, e), or (L, B, e) for a batch."""
        L, e = self.config.num_hidden_layers, self.config.state_size
        return np.zeros((L, e) if batch is None else (L, batch, e))

    def _check_state(self, state, batch: tuple) -> np.ndarray:
        """``state`` as float64 (L, e), or (L, B, e) for a batch of shape ``batch`` = (B,)."""
        state = np.asarray(state, dtype=np.float64)
        expect = (self.config.num_hidden_layers,) + tuple(batch) + (self.config.state_size,)
        if state.shape != expect:
            raise ValueError(f"state has shape {state.shape}, expected {expect}; "
                             "start from model.init_state()")
        return state

    def decode_step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One token from its embedding: (x_t, s_{t−1}) → (logits_t, s_t).

        This is exactly the function the accelerator computes.
        """
        state = self._check_state(state, np.shape(x)[:-1])
        x = np.asarray(x, dtype=np.float64)
        new_state = np.empty_like(state)
        for l in range(self.config.num_hidden_layers):
            h = self._rms(x, f"model.layers.{l}.attn_norm.weight")
            i, f = self._gates(l, h)
            new_state[l] = f * state[l] + i
            x = x + self._mix_out(l, h, new_state[l])
            x = x + self._channel_mix(l, x)
        return self.head(x), new_state

    def prefill(self, x_seq: np.ndarray, state: np.ndarray,
                head: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """A chunk of T prompt tokens from their embeddings: (x_1..x_T, s_0) → (logits_T, s_T).

        Layer by layer, as the engine's prefill pass runs its T lanes: i, f and g
        of all T tokens, then the recurrence scanned over t = 1..T (each token's
        state feeding the next: the only sequential part), then g_norm, o_proj and
        the GLU of all T tokens. The head runs for the last token only;
        ``head=False`` skips it (logits None), as for every chunk but a prompt's last.

        ``x_seq``: (T, d), or (T, B, d) for B sequences; ``state``: (L, e) or (L, B, e).
        Every operation is per token, so the result is bit-identical to T calls of
        :meth:`decode_step`.
        """
        cfg = self.config
        x = np.asarray(x_seq, dtype=np.float64)
        if x.ndim < 2 or x.shape[0] == 0 or x.shape[-1] != cfg.d:
            raise ValueError(f"x_seq must have shape (T, d) or (T, B, d) with T ≥ 1 and "
                             f"d = {cfg.d}, got {np.shape(x_seq)}")
        state = self._check_state(state, x.shape[1:-1])
        new_state = np.empty_like(state)
        for l in range(cfg.num_hidden_layers):
            h = self._rms(x, f"model.layers.{l}.attn_norm.weight")
            i, f = self._gates(l, h)                 # all T tokens
            s = np.empty_like(i)                     # s_1 .. s_T
            s_prev = state[l]
            for t in range(x.shape[0]):              # s_t = f_t ⊙ s_{t−1} + i_t
                s[t] = s_prev = f[t] * s_prev + i[t]
            new_state[l] = s[-1]
            x = x + self._mix_out(l, h, s)           # all T tokens
            x = x + self._channel_mix(l, x)
        return (self.head(x[-1]) if head else None), new_state

    def step(self, token, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(token id or (B,) ids, state) → (logits, new state)."""
        x = self.embed(token)
        if state is None:
            state = self.init_state(None if x.ndim == 1 else x.shape[0])
        return self.decode_step(x, state)

    def generate_greedy(self, prompt: Iterable[int], n_new: int) -> list[int]:
        """Greedy decoding from a prompt: the reference token stream."""
        state = self.init_state()

        def step(tok: int) -> np.ndarray:
            nonlocal state
            logits, state = self.step(tok, state)
            return logits
        return greedy_decode(step, prompt, n_new)

    def generate_greedy_batch(self, prompts: Iterable[Iterable[int]], n_new: int,
                              prefill_chunk: int = 1) -> list[list[int]]:
        """Greedy decoding of B prompts the way the engine runs them.

        Each prompt is prefilled into its own state slot in chunks of
        ``prefill_chunk`` tokens (the head on the last chunk only), then every
        new token is one batched :meth:`decode_step` of all B sequences. The
        token streams equal :meth:`generate_greedy` of each prompt alone.
        """
        prompts = [list(p) for p in prompts]
        if not prompts or any(not p for p in prompts):
            raise ValueError("prompts must be a non-empty list of non-empty token lists")
        if isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, (int, np.integer)) \
                or prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be a positive integer, got {prefill_chunk!r}")
        T = int(prefill_chunk)
        state = self.init_state(len(prompts))
        logits = np.empty((len(prompts), self.config.vocab_size))
        for b, prompt in enumerate(prompts):
            s = state[:, b]
            for c in range(0, len(prompt), T):
                z, s = self.prefill(self.embed(prompt[c:c + T]), s, head=c + T >= len(prompt))
            logits[b], state[:, b] = z, s
        out: list[list[int]] = [[] for _ in prompts]
        for n in range(n_new):
            tokens = np.argmax(logits, axis=-1)
            for b, tok in enumerate(tokens):
                out[b].append(int(tok))
            if n + 1 < n_new:                        # the logits after the last token are never needed
                logits, state = self.step(tokens, state)
        return out

    # ---------------------------------------------------------------- design
    def to_keras(self, form: str = "sequence"):
        """The same weights as a QKeras model: ``sequence`` (training) or ``step`` (decode).

        Needs the design extra (TensorFlow, QKeras).
        """
        from .design.keras_model import build_keras_model
        return build_keras_model(self.config, self.params, form=form)

    @classmethod
    def random(cls, config: ModelConfig, seed: int = 0) -> "MMFreeLM":
        return cls(config, init_random_state_dict(config, seed))
