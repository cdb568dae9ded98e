"""Quantisation-aware training of small MatMul-free LMs (the shipped demo model).

Corpus: the English prose of Python's own ``pydoc_data.topics`` (the text
behind ``help('topics')``), which ships with every CPython, so training needs
no download; it is distributed under the PSF licence. Byte-level tokens
(vocab 256), a held-out tail for perplexity.

Seeded, resumable (``<out>/train_state`` holds the TF checkpoint of weights,
optimizer and step), with a progress bar showing loss and tokens/s.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..corpus import corpus_bytes, split_holdout
from ..tokenizer import ByteTokenizer


@dataclass
class TrainConfig:
    steps: int = 2500
    batch_size: int = 32
    seq_len: int = 96
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 250
    quantize: bool = True


#: The shipped demo model's architecture (one source of truth; `make train` uses it).
DEMO_MODEL = ModelConfig(vocab_size=256, hidden_size=128, num_hidden_layers=3, intermediate_size=256,
                         rms_norm_eps=1e-6, use_lower_bound=True, bos_token_id=None, eos_token_id=None,
                         max_position_embeddings=1024,
                         extra={"mmfree_tokenizer": ByteTokenizer().to_config()})


def _batches(data: np.ndarray, batch: int, seq: int, rng: np.random.Generator):
    while True:
        starts = rng.integers(0, len(data) - seq - 1, batch)
        chunk = np.stack([data[s:s + seq + 1] for s in starts]).astype(np.int32)
        yield chunk[:, :-1], chunk[:, 1:]


def perplexity(logits_fn, data: np.ndarray, seq_len: int = 128, max_tokens: int = 16384) -> float:
    """exp(mean next-token NLL) over non-overlapping windows of held-out bytes."""
    n = min(len(data) - 1, max_tokens) // seq_len
    x = data[: n * seq_len].reshape(n, seq_len)
    y = data[1: n * seq_len + 1].reshape(n, seq_len)
    nll = 0.0
    for i in range(0, n, 16):
        lg = np.asarray(logits_fn(x[i:i + 16]), dtype=np.float64)
        lg = lg - lg.max(-1, keepdims=True)
        logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        nll -= np.take_along_axis(logp, y[i:i + 16, :, None], -1).sum()
    return float(math.exp(nll / (n * seq_len)))


STATE_DIR = "train_state"
#: The model config a train_state/ belongs to (a resume with another config is refused).
STATE_CONFIG = "model_config.json"


def prepare_train_dir(out_dir: str | Path, cfg: ModelConfig, force: bool = False) -> bool:
    """Check ``out_dir`` before training; True when it holds a run of this config to resume.

    A directory with ``train_state/`` of the same model config is resumed. Any
    other non-empty directory is refused unless ``force`` is set *and* it holds
    a checkpoint mmfree-hls wrote (its marker); ``force`` with a ``train_state/``
    of another config starts over. Runs before anything is trained, so a refusal
    costs nothing.
    """
    from ..checkpoint import CHECKPOINT_KIND, PACKED_FILE, _written_by_us
    from ..fsio import atomic_write_json, ensure_replaceable, make_output_dir, remove_tree, write_marker

    out = Path(out_dir)
    state = out / STATE_DIR
    if state.is_dir() and not state.is_symlink():
        recorded = None
        try:
            recorded = json.loads((state / STATE_CONFIG).read_text())
        except (OSError, ValueError):
            pass                                 # a run from before configs were recorded
        if recorded is None or recorded == cfg.to_dict():
            write_marker(out, CHECKPOINT_KIND)   # train_state/ is ours: the final save may replace files
            return True
        diff = sorted(k for k in set(recorded) | set(cfg.to_dict())
                      if recorded.get(k) != cfg.to_dict().get(k))
        if not force:
            raise FileExistsError(
                f"{state} holds the training state of another model config (differs in "
                f"{', '.join(diff[:6])}); choose another --out, or pass --force to start over")
        ensure_replaceable(out, CHECKPOINT_KIND, force=True, legacy_markers=(STATE_DIR,),
                           what="training run")
        write_marker(out, CHECKPOINT_KIND)
        remove_tree(state, CHECKPOINT_KIND, legacy_markers=(STATE_CONFIG,))
    elif out.exists():
        ensure_replaceable(out, CHECKPOINT_KIND, force=force,
                           legacy_markers=(PACKED_FILE,) if _written_by_us(out) else (),
                           what="checkpoint")
    make_output_dir(out, CHECKPOINT_KIND)
    make_output_dir(state, CHECKPOINT_KIND)
    atomic_write_json(state / STATE_CONFIG, cfg.to_dict(), sort_keys=True)
    return False


def train(cfg: ModelConfig, out_dir: str | Path, tc: TrainConfig = TrainConfig(),
          progress: bool = True, force: bool = False) -> dict:
    """Train (or resume) a model and write a checkpoint directory to ``out_dir``.

    ``force``: replace a checkpoint already in ``out_dir`` (only one mmfree-hls
    wrote); without it a non-empty ``out_dir`` is refused unless it holds a
    resumable run of the same config (see :func:`prepare_train_dir`).
    """
    out = Path(out_dir)
    prepare_train_dir(out, cfg, force)         # refuse before the slow imports and training
    import tensorflow as tf
    from tqdm.auto import tqdm

    from ..checkpoint import save_checkpoint
    from ..fsio import atomic_write
    from ..reference import MMFreeLM
    from .keras_model import MMFreeLMKeras

    tf.keras.utils.set_random_seed(tc.seed)
    train_data, held_out = split_holdout(corpus_bytes())

    model = MMFreeLMKeras(cfg, quantize=tc.quantize)
    model.build()
    schedule = _WarmupCosine(tc.lr, tc.warmup, tc.steps)
    opt = tf.keras.optimizers.AdamW(learning_rate=schedule, weight_decay=tc.weight_decay, clipnorm=1.0)
    step_var = tf.Variable(0, dtype=tf.int64, name="step")
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, str(out / STATE_DIR), max_to_keep=1)
    if manager.latest_checkpoint:
        try:
            ckpt.restore(manager.latest_checkpoint)
        except (ValueError, tf.errors.OpError) as e:
            raise ValueError(f"{out / STATE_DIR} does not belong to this model config ({e}); "
                             "choose another --out, or pass --force to start over") from None
        print(f"resuming from step {int(step_var.numpy())} ({manager.latest_checkpoint})")

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng(tc.seed + int(step_var.numpy()))   # resumed runs continue the stream
    batches = _batches(train_data, tc.batch_size, tc.seq_len, rng)
    start = int(step_var.numpy())
    bar = tqdm(total=tc.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True)
    t0, ema = time.perf_counter(), None
    for step in range(start, tc.steps):
        x, y = next(batches)
        loss = float(train_step(x, y))
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        step_var.assign(step + 1)
        tok_s = (step + 1 - start) * tc.batch_size * tc.seq_len / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{tok_s:,.0f}")
        bar.update(1)
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps:
            manager.save()
    bar.close()

    state = model.state_dict()
    if tc.quantize:
        lm = MMFreeLM(cfg, state)
        save_checkpoint(lm, out, overwrite=True)
        ppl = perplexity(lm.logits, held_out)          # the integer path users will run
    else:
        ppl = perplexity(lambda ids: model(ids).numpy(), held_out)
    report = {"held_out_perplexity": ppl, "train_config": asdict(tc), "model_config": cfg.to_dict(),
              "corpus": "pydoc_data.topics (Python documentation topics), bytes",
              # the corpus is the running CPython's own text: another Python version, another corpus
              "corpus_python": platform.python_version(),
              "corpus_bytes": int(len(train_data) + len(held_out)),
              "held_out_bytes": int(len(held_out)), "final_loss_ema": ema,
              "wall_time_s": time.perf_counter() - t0}
    atomic_write(out / "train_report.json", json.dumps(report, indent=2) + "\n")
    return report


class _WarmupCosine:
    """Linear warm-up then cosine decay to 10 % (a Keras LearningRateSchedule)."""

    def __new__(cls, peak, warmup, total):
        import tensorflow as tf

        class Schedule(tf.keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                step = tf.cast(step, tf.float32)
                warm = peak * (step + 1) / warmup
                frac = tf.clip_by_value((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
                cos = peak * (0.1 + 0.45 * (1 + tf.cos(math.pi * frac)))
                return tf.where(step < warmup, warm, cos)

            def get_config(self):
                return {"peak": peak, "warmup": warmup, "total": total}

        return Schedule()
