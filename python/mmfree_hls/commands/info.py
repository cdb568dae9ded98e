"""``mmfree info PATH``: what a checkpoint holds and what it costs, without loading its weights.

PATH is a checkpoint directory (reference layout or ours) or a config.json.
Prints the model's sizes, its parameter count, the bytes of its ternary
weights packed at 2 and 1.6 bits per weight (rows padded to whole bytes, as
stored and streamed), and the recurrent state carried from token to token.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="sizes, parameter count, packed bytes and state size of a checkpoint",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("path", metavar="PATH", help="checkpoint directory or config.json")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def print_summary(s: dict) -> None:
    m, prm = s["model"], s["parameters"]
    rows = [
        ("checkpoint", s["path"]),
        ("model", f"{m['model_type']}: d={m['hidden_size']} L={m['num_hidden_layers']} "
                  f"e={m['recurrence_width']} m={m['intermediate_size']} V={m['vocab_size']} "
                  f"lower_bound={'yes' if m['use_lower_bound'] else 'no'} eps={m['rms_norm_eps']:g}"),
        ("parameters", f"{prm['total']:,} ({prm['ternary']:,} ternary in {m['bitlinear_layers']} BitLinears, "
                       f"{prm['float']:,} float: embeddings, norms, bounds)"),
        ("fp16 size", _mb(s["fp16_bytes"])),
    ]
    for lay, n in s["packed_bytes"].items():
        rows.append((f"packed {lay}", f"{n:,} bytes ({_mb(n)}; {s['packed_bytes_ideal'][lay] / 1e6:,.1f} MB "
                                      f"without row padding) + one scale per BitLinear"))
    st = s["state"]
    rows.append(("state/token", f"{st['values_per_token']:,} values = {st['bytes_fp32']:,} bytes fp32 "
                                f"(L x e, constant: no KV cache)"))
    if s.get("stored_dtypes"):
        rows.append(("stored as", ", ".join(s["stored_dtypes"])))
    for name, size in s.get("files", {}).items():
        rows.append(("file", f"{name}: {_mb(size)}"))
    if s.get("packed_layouts"):
        rows.append(("pre-packed", ", ".join(s["packed_layouts"])))
    if s.get("weights_note"):
        rows.append(("weights", s["weights_note"]))
    if "tokenizer" in s:
        rows.append(("tokenizer", s["tokenizer"] or "none (give token ids, or add tokenizer.json)"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def run(args) -> int:
    from ..checkpoint import summarize

    summary = summarize(args.path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0
