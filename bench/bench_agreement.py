"""How closely each path follows the numpy integer reference, on the shipped demo model.

Two kinds of figure, because they answer different questions:

* **per step** (teacher-forced state): every C-sim step starts from the
  *reference's* state, so the error is what one step adds;
* **carried state** (a real decode): the C-sim runs on its own state, so
  errors build up in it from step to step; greedy decoding on the C-sim is
  compared token for token with the reference's.

Both feed the same token stream (the demo prompt, then the reference's greedy
continuation). The error of a step is max |Δlogit| / max |reference logit|;
the result gives its median, 90th percentile and maximum over the steps.

The C-sim is reached through the host class (``Accelerator.execute`` on the
overlay package ``make demo`` writes, built here when it is missing), so this
measures whatever engine the package holds. With ``--keras`` (default on) it also measures the QKeras model
against the reference on held-out text (float64 and float32) and the QKeras
step form against its sequence form.

    python bench/bench_agreement.py [--overlay overlays/pynq-z2/demo] [--tokens 64]

Prints a table and writes ``bench/results/agreement.json``. ``BOUNDS`` are the
limits ``tests/test_readme_figures.py`` asserts on the demo model.
"""

from __future__ import annotations

import _common  # noqa: F401  (first: quiet TensorFlow)

import argparse
import sys
from pathlib import Path

import numpy as np

DEMO = _common.ROOT / "python" / "mmfree_hls" / "data" / "demo_model"
OVERLAY = _common.ROOT / "overlays" / "pynq-z2" / "demo"
PROMPT = "The for statement is used to "       # mmfree demo's default prompt

#: Test bounds on the demo model (tests/test_readme_figures.py asserts them; README rows show them).
BOUNDS = {
    "per_step": {"median": 1e-5, "p90": 1e-4, "max": 2e-2},
    "carried": {"median": 2e-2, "p90": 5e-2, "max": 2e-1, "greedy_min_fraction": 0.9},
    "keras_float64": {"max": 1e-9, "argmax_min_fraction": 1.0},
    "keras_float32": {"max": 5e-2, "argmax_min_fraction": 0.98},
    "keras_step_vs_sequence": {"max_abs": 1e-9},
}


def rel_errors(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per step: max |got − ref| / max |ref|."""
    return np.abs(got - ref).max(axis=-1) / np.abs(ref).max(axis=-1)


def stats(err: np.ndarray) -> dict:
    return {"median": float(np.median(err)), "p90": float(np.percentile(err, 90)), "max": float(err.max()),
            "steps": int(err.size)}


def reference_stream(model, prompt: list[int], n: int):
    """Tokens (prompt + greedy continuation), per-step logits, and the state *before* each step."""
    tokens = prompt + model.generate_greedy(prompt, n)
    state, before, logits = model.init_state(), [], []
    for tok in tokens:
        before.append(state)
        lg, state = model.step(tok, state)
        logits.append(lg)
    return tokens, np.stack(logits), before


def csim_agreement(acc, model, prompt: list[int], n: int) -> dict:
    """Per-step and carried-state errors of an open Accelerator against ``model``; greedy identity."""
    tokens, ref, before = reference_stream(model, prompt, n)
    xs = [model.embed(t).astype(np.float32) for t in tokens]
    out = {"prompt_tokens": len(prompt), "tokens": len(tokens)}
    # every build takes a step's state from the host buffer (load_mask), so each step can start
    # from the reference's own state
    got = np.stack([acc.execute(x, s)[0] for x, s in zip(xs, before)])
    out["per_step"] = stats(rel_errors(got.astype(np.float64), ref))
    state, got = None, []
    for x in xs:
        lg, state = acc.execute(x, state)
        got.append(lg)
    out["carried"] = stats(rel_errors(np.stack(got).astype(np.float64), ref))
    sim = list(acc.generate(prompt, n))
    want = tokens[len(prompt):]
    same = sum(a == b for a, b in zip(sim, want))
    first = next((i for i, (a, b) in enumerate(zip(sim, want)) if a != b), None)
    out["greedy"] = {"identical": int(same), "of": int(n), "first_divergence": first}
    if first is not None:
        top2 = np.sort(ref[len(prompt) + first - 1])[-2:]
        out["greedy"]["reference_top2_gap_there"] = float(top2[1] - top2[0])
    return out


def keras_agreement(model, held: np.ndarray, windows: int = 4, length: int = 128) -> dict:
    """QKeras sequence form vs the reference (float64, float32) and step form vs sequence form."""
    import tensorflow as tf

    ids = held[: windows * length].reshape(windows, length).astype(np.int64)
    ref = model.logits(ids)

    def argmax_agrees(got):            # tie-aware: the integer head has exact ties
        pick = np.take_along_axis(ref, got.argmax(-1)[..., None], -1)[..., 0]
        return int(np.isclose(pick, ref.max(-1), rtol=1e-12, atol=0).sum())

    out = {"positions": int(ids.size)}
    old = tf.keras.backend.floatx()
    try:
        for floatx in ("float64", "float32"):
            tf.keras.backend.set_floatx(floatx)
            seq = model.to_keras("sequence")
            got = seq(ids).numpy().astype(np.float64)
            out[f"keras_{floatx}"] = {"max": float(np.abs(got - ref).max() / np.abs(ref).max()),
                                      "argmax_identical": argmax_agrees(got)}
            if floatx == "float64":
                step, cfg = seq.step_model(), model.config
                states = [np.zeros((2, cfg.state_size)) for _ in range(cfg.num_hidden_layers)]
                worst = 0.0
                for t in range(32):
                    x = model.params["model.embeddings.weight"][ids[:2, t]].astype(np.float64)
                    res = step([x] + states)
                    states = [s.numpy() for s in res[1:]]
                    worst = max(worst, float(np.abs(res[0].numpy() - got[:2, t]).max()))
                out["keras_step_vs_sequence"] = {"max_abs": worst, "steps": 32, "sequences": 2}
    finally:
        tf.keras.backend.set_floatx(old)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--overlay", default=str(OVERLAY), help="overlay package to measure (default: make demo's)")
    ap.add_argument("--ckpt", default=str(DEMO), help="the model the overlay was built from")
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens after the prompt")
    ap.add_argument("--no-keras", action="store_true", help="skip the QKeras rows (no TensorFlow needed)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from mmfree_hls.checkpoint import load_checkpoint
    from mmfree_hls.corpus import corpus_bytes, split_holdout
    from mmfree_hls.runtime import Accelerator
    from mmfree_hls.tokenizer import load_tokenizer

    overlay = Path(args.overlay)
    if overlay.resolve() == OVERLAY.resolve():
        build_demo_overlay()        # up to date with the sources: `mmfree demo` rebuilds a stale package
    if not (overlay / "manifest.json").is_file():
        print(f"no overlay package at {overlay}: run `make demo` first (it writes overlays/pynq-z2/demo), "
              "or pass --overlay DIR", file=sys.stderr)
        return 2
    model = load_checkpoint(args.ckpt)
    prompt = load_tokenizer(args.ckpt).encode(PROMPT)
    with Accelerator.open(overlay, backend="csim") as acc:
        csim = csim_agreement(acc, model, prompt, args.tokens)
        manifest = acc.manifest if hasattr(acc, "manifest") else None
    result = {"model": Path(args.ckpt).name, "overlay": str(overlay.relative_to(_common.ROOT)
                                                             if overlay.resolve().is_relative_to(_common.ROOT)
                                                             else overlay),
              "tier": getattr(manifest, "tier", None) or _manifest_field(overlay, "tier"),
              "prompt": PROMPT, "csim": csim, "bounds": BOUNDS}
    if not args.no_keras:
        result["keras"] = keras_agreement(model, split_holdout(corpus_bytes())[1])
    out = _common.write_result("agreement", result, args.out)

    print(f"model {result['model']}, overlay {result['overlay']} ({result['tier']} tier), prompt {PROMPT!r} "
          f"+ {args.tokens} greedy tokens")
    print(f"{'C-sim vs reference':<34} {'median':>9} {'p90':>9} {'max':>9}")
    for key, label in (("per_step", "per step (reference's state)"), ("carried", "carried state (a decode)")):
        s = csim[key]
        if s:
            print(f"{label:<34} {s['median']:9.1e} {s['p90']:9.1e} {s['max']:9.1e}")
        else:
            print(f"{label:<34} {csim.get('per_step_note')}")
    g = csim["greedy"]
    print(f"greedy tokens identical: {g['identical']}/{g['of']}"
          + (f" (first divergence at {g['first_divergence']}, reference top-2 gap "
             f"{g['reference_top2_gap_there']:.3g})" if g["first_divergence"] is not None else ""))
    if "keras" in result:
        k = result["keras"]
        for fx in ("float64", "float32"):
            print(f"QKeras {fx} vs reference: max rel {k[f'keras_{fx}']['max']:.1e}, argmax "
                  f"{k[f'keras_{fx}']['argmax_identical']}/{k['positions']}")
        print(f"QKeras step vs sequence form (float64): max abs {k['keras_step_vs_sequence']['max_abs']:.1e}")
    print(f"wrote {out}")
    return 0


def build_demo_overlay() -> None:
    """What `make demo` builds (hls_project/demo, overlays/pynq-z2/demo), without its sampled text;
    cached when nothing changed."""
    import subprocess
    subprocess.run([sys.executable, "-m", "mmfree_hls", "demo", "--max-new-tokens", "1", "--check-tokens", "0"],
                   cwd=_common.ROOT, check=True, stdout=subprocess.DEVNULL)


def _manifest_field(overlay: Path, key: str):
    import json
    return json.loads((overlay / "manifest.json").read_text()).get(key)


if __name__ == "__main__":
    sys.exit(main())
