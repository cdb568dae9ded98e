"""Property-based tests of every input parser: any input is accepted or refused with the project's own
error class, whose message names the field, file or tensor -- never another exception.

Parsers covered: the safetensors header reader, the config.json loader, the
tokenizers (encode / decode / stream / config record / loader) and the sampling
parameters. (The manifest verifier is fuzzed in test_hostile_manifest.py.)
Each property runs 60-100 examples; the file runs in a few seconds.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmfree_hls.config import ConfigError, ModelConfig
from mmfree_hls.hgrn_bit import map_reference_config
from mmfree_hls.safetensors_io import CheckpointError, read_header
from mmfree_hls.sampling import GREEDY_BELOW, Sampler, SamplingError
from mmfree_hls.tokenizer import ByteTokenizer, StreamDecoder, TokenizerError, load_tokenizer

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
JSON = st.recursive(LEAF, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                 st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                    max_leaves=6)


# ------------------------------------------------------------- safetensors
def _file(tmp_path, blob: bytes):
    path = tmp_path / "f.safetensors"
    path.write_bytes(blob)
    return path


@FAST
@given(blob=st.binary(max_size=200))
def test_fuzz_safetensors_arbitrary_bytes(tmp_path, blob):
    path = _file(tmp_path, blob)
    try:
        read_header(path)
    except CheckpointError as e:
        assert str(path) in str(e)


ENTRY = st.fixed_dictionaries({}, optional={
    "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "U8", "F64", "I8", "F8_E4M3"]), JSON),
    "shape": st.one_of(st.lists(st.integers(-3, 2**40), max_size=3), JSON),
    "data_offsets": st.one_of(st.lists(st.integers(-10, 2**64), min_size=2, max_size=2),
                              st.lists(st.one_of(st.text(max_size=3), st.floats()), min_size=2, max_size=2),
                              JSON)})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.dictionaries(st.text(min_size=1, max_size=8), ENTRY, max_size=3),
       meta=st.one_of(st.none(), JSON), payload=st.integers(0, 64))
def test_fuzz_safetensors_headers(tmp_path, entries, meta, payload):
    header = dict(entries)
    if meta is not None:
        header["__metadata__"] = meta
    blob = json.dumps(header).encode()
    path = _file(tmp_path, struct.pack("<Q", len(blob)) + blob + bytes(payload))
    try:
        tensors, metadata = read_header(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return
    # Accepted: every tensor's byte range lies in the file and matches dtype x shape.
    size = path.stat().st_size
    for t in tensors.values():
        assert 0 <= t.start <= t.stop <= size
    assert all(isinstance(v, str) for v in metadata.values())


# ------------------------------------------------------------------ config
BASE = {"model_type": "hgrn_bit", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2}
FIELDS = ["vocab_size", "hidden_size", "num_hidden_layers", "hidden_ratio", "intermediate_size",
          "num_heads", "expand_ratio", "rms_norm_eps", "use_lower_bound", "use_short_conv", "attn_mode",
          "hidden_act", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
          "max_position_embeddings", "model_type"]


@settings(max_examples=100, deadline=None)
@given(edits=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=3))
def test_fuzz_config_fields(edits):
    raw = dict(BASE, **edits)
    try:
        cfg, _ = map_reference_config(raw)
    except ConfigError as e:
        msg = str(e)
        assert any(f in msg for f in FIELDS), msg            # the message names a field
        return
    # Accepted: the dimensions are usable numbers, the booleans are booleans.
    assert cfg.ffn_dim >= 1 and cfg.d >= 1 and cfg.vocab_size >= 1
    assert all(isinstance(getattr(cfg, f), bool) for f in ("use_lower_bound", "use_short_conv",
                                                           "tie_word_embeddings"))
    for f in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = getattr(cfg, f)
        assert v is None or 0 <= v < cfg.vocab_size


@FAST
@given(text=st.text(max_size=60))
def test_fuzz_config_json_text(tmp_path, text):
    try:
        ModelConfig.from_json("{" + text)
    except ConfigError as e:
        assert "config JSON text" in str(e)
    path = tmp_path / "config.json"
    path.write_text("{" + text, encoding="utf-8", errors="surrogatepass")
    try:
        ModelConfig.from_json(path)
    except ConfigError as e:
        assert str(path) in str(e)


# --------------------------------------------------------------- tokenizer
@FAST
@given(text=st.text(max_size=40))
def test_fuzz_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer(["<s>", "</s>"], "<s>", "</s>")
    try:
        ids = tok.encode(text, add_bos=True)
    except TokenizerError as e:                          # only lone surrogates are not encodable
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text) and "not valid Unicode" in str(e)
        return
    assert ids[0] == tok.bos_token_id and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    dec = StreamDecoder(tok)
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == text


@FAST
@given(ids=st.lists(st.one_of(st.integers(-5, 300), st.booleans(), st.floats(), st.text(max_size=2)),
                    max_size=8))
def test_fuzz_decode_accepts_only_token_ids(ids):
    tok = ByteTokenizer(["<eos>"], eos_token="<eos>")
    try:
        out = tok.decode(ids, skip_special_tokens=False)
    except TokenizerError as e:
        assert "token id" in str(e)
        assert any(isinstance(i, (bool, float, str)) or not 0 <= i < 257 for i in ids)
        return
    assert isinstance(out, str)


@FAST
@given(record=JSON)
def test_fuzz_byte_tokenizer_record(record):
    try:
        tok = ByteTokenizer.from_config(record)
    except TokenizerError:
        return
    assert tok.vocab_size >= 256


@FAST
@given(config=st.one_of(JSON, st.fixed_dictionaries({"mmfree_tokenizer": JSON, "vocab_size": JSON})))
def test_fuzz_tokenizer_loader(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    try:
        tok = load_tokenizer(tmp_path)
    except TokenizerError as e:
        assert str(tmp_path) in str(e) or "tokenizer" in str(e) or "special" in str(e) \
            or "bos_token" in str(e) or "eos_token" in str(e)
        return
    assert tok.vocab_size >= 256


# ---------------------------------------------------------------- sampling
PARAM = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True,
                  allow_infinity=True), st.text(max_size=3))


@settings(max_examples=100, deadline=None)
@given(temperature=PARAM, top_k=PARAM, top_p=PARAM, seed=PARAM,
       logits=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_fuzz_sampling_parameters(temperature, top_k, top_p, seed, logits):
    try:
        s = Sampler(temperature, top_k, top_p, seed)
    except SamplingError as e:
        assert any(n in str(e) for n in ("temperature", "top_k", "top_p", "seed"))
        return
    z = np.array(logits, dtype=np.float32)
    tok = s(z)
    assert 0 <= tok < z.size
    if s.temperature < GREEDY_BELOW:
        assert tok == int(np.argmax(z))
    else:
        assume(s.top_k is None or s.top_k >= 1)
        assert np.isfinite(z[tok])


# ------------------------------------------------------------- shard index
@FAST
@given(index=st.one_of(JSON, st.fixed_dictionaries({"weight_map": st.dictionaries(
    st.text(max_size=6), st.one_of(JSON, st.sampled_from(["../x.safetensors", "/etc/passwd", "s.safetensors",
                                                          "", ".", "a/b.safetensors"])), max_size=3)})))
def test_fuzz_shard_index(tmp_path, index):
    from mmfree_hls.hgrn_bit import INDEX_FILE, find_weight_tensors
    root = tmp_path / "ck"
    root.mkdir(exist_ok=True)
    (root / INDEX_FILE).write_text(json.dumps(index))
    try:
        find_weight_tensors(root)
    except CheckpointError as e:
        assert INDEX_FILE in str(e) or str(root) in str(e)
    except FileNotFoundError as e:                     # a listed shard is not there: says which
        assert "shard files that are not there" in str(e)
