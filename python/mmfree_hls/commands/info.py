"""``mmfree info PATH``: what a checkpoint holds and what it costs, without loading its weights.

PATH is a checkpoint directory (reference layout or ours) or a config.json.
Prints the model's sizes, its parameter count, the bytes of its ternary
weights packed at 2 and 1.6 bits per weight (rows padded to whole bytes, as
stored and streamed), and the recurrent state carried from token to token.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("info", help="sizes, parameter count, packed bytes and state size of a checkpoint",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("path", metavar="PATH", help="checkpoint directory or config.json")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def summarize(path: str | Path) -> dict:
    """Everything ``mmfree info`` reports, as a dict (reads headers only)."""
    from ..checkpoint import PACKED_FILE
    from ..hgrn_bit import (CONFIG_FILE, find_weight_tensors, map_reference_config,
                            read_config_json)
    from ..packing import BITS_PER_WEIGHT, LAYOUTS, packed_size
    from ..reference import bitlinear_names, expected_shapes
    from ..safetensors_io import read_header
    from ..tokenizer import CONFIG_KEY, TOKENIZER_FILE

    p = Path(path)
    if p.is_file():
        if p.suffix != ".json":
            raise FileNotFoundError(f"{p} is a file; pass the checkpoint directory that holds it "
                                    f"({p.parent}) or its {CONFIG_FILE}")
        try:
            root, raw = p.parent, json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not UTF-8 JSON ({e})") from None
        where = str(p)
    else:
        root, raw = p, read_config_json(p)
        where = str(p / CONFIG_FILE)
    cfg, tied = map_reference_config(raw, where=where)
    shapes = expected_shapes(cfg)
    names = bitlinear_names(cfg)
    ternary = cfg.ternary_weight_count()
    params = cfg.parameter_count()
    out: dict = {
        "path": str(p),
        "model": {"model_type": cfg.model_type, "hidden_size": cfg.d, "num_hidden_layers": cfg.num_hidden_layers,
                  "recurrence_width": cfg.input_dim, "intermediate_size": cfg.ffn_dim,
                  "vocab_size": cfg.vocab_size, "use_lower_bound": cfg.use_lower_bound,
                  "rms_norm_eps": cfg.rms_norm_eps, "bitlinear_layers": len(names),
                  "tied_head_in_source": tied},
        "parameters": {"total": params, "ternary": ternary, "float": params - ternary},
        "packed_bytes": {lay: sum(packed_size(shapes[n + ".weight"], lay) for n in names) for lay in LAYOUTS},
        "packed_bytes_ideal": {lay: ternary * BITS_PER_WEIGHT[lay] / 8 for lay in LAYOUTS},
        "state": {"values_per_token": cfg.num_hidden_layers * cfg.state_size,
                  "bytes_fp32": 4 * cfg.num_hidden_layers * cfg.state_size},
        "fp16_bytes": 2 * params,
    }
    files = {}
    if root.is_dir():
        try:
            tensors = find_weight_tensors(root)
            out["stored_dtypes"] = sorted({t.dtype for t in tensors.values()})
            for f in sorted({t.file for t in tensors.values()}):
                files[f.name] = f.stat().st_size
        except (FileNotFoundError, ValueError) as e:
            out["weights_note"] = str(e).splitlines()[0]
        if (root / PACKED_FILE).is_file():
            files[PACKED_FILE] = (root / PACKED_FILE).stat().st_size
            out["packed_layouts"] = read_header(root / PACKED_FILE)[1].get("layouts", "").split(",")
        if (root / TOKENIZER_FILE).is_file():
            out["tokenizer"] = TOKENIZER_FILE
        elif CONFIG_KEY in raw:
            out["tokenizer"] = f"built-in {raw[CONFIG_KEY].get('type', '?')} ({CONFIG_KEY} in config.json)"
        else:
            out["tokenizer"] = None
    out["files"] = files
    return out


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
    summary = summarize(args.path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0
