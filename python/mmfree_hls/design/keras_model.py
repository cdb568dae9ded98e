"""The MatMul-free LM in QKeras, in two forms that share one set of weights.

``MMFreeLMKeras`` is the sequence (training) form, written top to bottom like
the paper. ``MMFreeLMKeras.step_model()`` builds the decode form
``(x_t, s_1..s_L) → (logits_t, s_1'..s_L')`` from the *same layer objects*
(so the same variables); only the forget-gate lower bounds are snapshotted
into each ``MLGRUCell``, because the decode form treats them as constants.

Layer names follow the hardware graph (``l{l}_i_proj``, ``l{l}_mlgru``, …) so
the hls4ml project reads like the model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf
from tensorflow import keras

from ..config import ModelConfig
from ..reference import expected_shapes, lower_bounds
from .layers import GLU, BitLinear, GatedRMSNorm, MLGRUCell, MLGRUScan, RMSNorm

ATTN = ("i_proj", "f_proj", "g_proj", "o_proj")
MLP = ("gate_proj", "down_proj")


class Block:
    """The layers of one MatMul-free block (a plain holder, not a Keras layer)."""

    def __init__(self, cfg: ModelConfig, l: int, quantize: bool = True):
        e, d, m = cfg.input_dim, cfg.d, cfg.ffn_dim
        eps = cfg.rms_norm_eps
        self.l = l
        self.use_lower_bound = cfg.use_lower_bound and l > 0
        self.attn_norm = RMSNorm(eps, name=f"l{l}_attn_norm")
        self.i_proj = BitLinear(e, quantize, cfg.act_bits, name=f"l{l}_i_proj")
        self.f_proj = BitLinear(e, quantize, cfg.act_bits, name=f"l{l}_f_proj")
        self.g_proj = BitLinear(e, quantize, cfg.act_bits, name=f"l{l}_g_proj")
        self.g_norm = GatedRMSNorm(eps, name=f"l{l}_g_norm")
        self.o_proj = BitLinear(d, quantize, cfg.act_bits, name=f"l{l}_o_proj")
        self.mlp_norm = RMSNorm(eps, name=f"l{l}_mlp_norm")
        self.gate_proj = BitLinear(2 * m, quantize, cfg.act_bits, name=f"l{l}_gate_proj")
        self.glu = GLU(name=f"l{l}_glu")
        self.down_proj = BitLinear(d, quantize, cfg.act_bits, name=f"l{l}_down_proj")
        self.scan = MLGRUScan(self.use_lower_bound, name=f"l{l}_mlgru_scan")

    def channel_mix(self, x):
        return self.down_proj(self.glu(self.gate_proj(self.mlp_norm(x))))


class MMFreeLMKeras(keras.Model):
    """Sequence form: token ids (B, T) → logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig, quantize: bool = True, **kwargs):
        super().__init__(name="mmfree_lm", **kwargs)
        self.cfg = cfg.validate()
        self.quantize = quantize
        self.embeddings = keras.layers.Embedding(cfg.vocab_size, cfg.d, name="embeddings",
                                                 embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.blocks = [Block(cfg, l, quantize) for l in range(cfg.num_hidden_layers)]
        # Keras tracks layers assigned as attributes; a Block is a plain holder.
        self._block_layers = [layer for b in self.blocks for layer in vars(b).values()
                              if isinstance(layer, keras.layers.Layer)]
        self.norm = RMSNorm(cfg.rms_norm_eps, name="norm")
        self.lm_head = BitLinear(cfg.vocab_size, quantize, cfg.act_bits, name="lm_head")

    def build(self, input_shape=None):
        L, e = self.cfg.num_hidden_layers, self.cfg.input_dim
        if self.cfg.use_lower_bound:
            self.lower_bounds = self.add_weight(name="lower_bounds", shape=(L, e), initializer="zeros")
        super().build((None, None) if input_shape is None else input_shape)
        self(tf.zeros((1, 1), dtype=tf.int32))       # create every variable

    def layer_lower_bounds(self):
        """lb = cumsum(softmax(lower_bounds, layers)) − p[0] (row l for layer l)."""
        if not self.cfg.use_lower_bound:
            return tf.zeros((self.cfg.num_hidden_layers, self.cfg.input_dim))
        p = tf.nn.softmax(self.lower_bounds, axis=0)
        return tf.cumsum(p, axis=0) - p[0]

    def call(self, input_ids):
        x = self.embeddings(input_ids)
        lb = self.layer_lower_bounds()
        for b in self.blocks:
            h = b.attn_norm(x)
            s = b.scan([b.i_proj(h), b.f_proj(h), lb[b.l]])
            x = x + b.o_proj(b.g_norm([b.g_proj(h), s]))
            x = x + b.channel_mix(x)
        return self.lm_head(self.norm(x))

    # ------------------------------------------------------------ decode form
    def step_model(self) -> keras.Model:
        """Functional decode-step model over the same layers (and variables)."""
        cfg = self.cfg
        # the reference's float64 bounds (not TF's float32 softmax): the decode form's constants
        lb = (lower_bounds(self.lower_bounds.numpy()) if cfg.use_lower_bound
              else np.zeros((cfg.num_hidden_layers, cfg.input_dim)))
        x_in = keras.Input((cfg.d,), name="x")
        states = [keras.Input((cfg.state_size,), name=f"state_{l}") for l in range(cfg.num_hidden_layers)]
        x, new_states = x_in, []
        for b, s_prev in zip(self.blocks, states):
            cell = MLGRUCell(b.use_lower_bound, name=f"l{b.l}_mlgru")
            h = b.attn_norm(x)
            s = cell([b.i_proj(h), b.f_proj(h), s_prev])
            cell.lower_bound.assign(lb[b.l])
            new_states.append(s)
            o = b.g_norm([b.g_proj(h), s])
            x = keras.layers.Add(name=f"l{b.l}_attn_add")([x, b.o_proj(o)])
            x = keras.layers.Add(name=f"l{b.l}_mlp_add")([x, b.channel_mix(x)])
        logits = self.lm_head(self.norm(x))
        return keras.Model([x_in] + states, [logits] + new_states, name="mmfree_step")

    # ---------------------------------------------------- reference weights
    def _weight_map(self):
        """Reference state-dict key → (variable, transpose?)."""
        out = {"model.embeddings.weight": (self.embeddings.embeddings, False),
               "model.norm.weight": (self.norm.weight, False),
               "lm_head.weight": (self.lm_head.kernel, True),
               "lm_head.norm.weight": (self.lm_head.norm, False)}
        if self.cfg.use_lower_bound:
            out["model.lower_bounds"] = (self.lower_bounds, False)
        for b in self.blocks:
            p = f"model.layers.{b.l}."
            out[p + "attn_norm.weight"] = (b.attn_norm.weight, False)
            out[p + "mlp_norm.weight"] = (b.mlp_norm.weight, False)
            out[p + "attn.g_norm.weight"] = (b.g_norm.weight, False)
            for group, names in (("attn", ATTN), ("mlp", MLP)):
                for n in names:
                    layer = getattr(b, n)
                    out[p + f"{group}.{n}.weight"] = (layer.kernel, True)
                    out[p + f"{group}.{n}.norm.weight"] = (layer.norm, False)
        return out

    def load_state_dict(self, params: Mapping[str, np.ndarray]) -> "MMFreeLMKeras":
        want = expected_shapes(self.cfg)
        unknown = sorted(set(params) - set(want))
        missing = sorted(set(want) - set(params))
        if unknown or missing:
            raise KeyError(f"state dict does not match the config: missing {missing}, unknown {unknown}")
        for key, (var, transpose) in self._weight_map().items():
            value = np.asarray(params[key], dtype=np.float32)
            if value.shape != want[key]:
                raise ValueError(f"{key}: shape {value.shape}, expected {want[key]}")
            var.assign(value.T if transpose else value)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: (v.numpy().T if t else v.numpy()).astype(np.float32)
                for k, (v, t) in self._weight_map().items()}


def build_keras_model(cfg: ModelConfig, params: Mapping[str, np.ndarray] | None = None,
                      form: str = "sequence", quantize: bool = True):
    """``sequence`` → :class:`MMFreeLMKeras`; ``step`` → its functional decode-step model."""
    if form not in ("sequence", "step"):
        raise ValueError(f"form must be 'sequence' or 'step', got {form!r}")
    model = MMFreeLMKeras(cfg, quantize=quantize)
    model.build()
    if params is not None:
        model.load_state_dict(params)
    return model if form == "sequence" else model.step_model()


