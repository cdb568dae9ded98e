"""Tokenizers: the built-in byte tokenizer and HF tokenizer.json through `tokenizers`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmfree_hls.tokenizer import (CONFIG_KEY, ByteTokenizer, HFTokenizer, StreamDecoder,
                                  TokenizerError, load_tokenizer)

TEXTS = ["", "hello world", "héllo wörld", "日本語のテキスト", "emoji 🙂🚀 mixed", "tabs\tand\nnewlines\x00",
         "  leading and trailing spaces  ", "<bos> is just text"]


def write_config(root, **fields):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(dict({"model_type": "hgrn_bit"}, **fields)))


# ------------------------------------------------------------------ bytes
@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text


def test_byte_special_tokens():
    tok = ByteTokenizer(["<bos>", "<eos>"], bos_token="<bos>", eos_token="<eos>")
    assert tok.vocab_size == 258 and (tok.bos_token_id, tok.eos_token_id) == (256, 257)
    ids = tok.encode("<bos> hi", add_bos=True)
    assert ids[0] == 256 and 256 not in ids[1:]                   # text never becomes a special id
    assert tok.decode(ids + [257]) == "<bos> hi"
    assert tok.decode(ids + [257], skip_special_tokens=False) == "<bos><bos> hi<eos>"
    with pytest.raises(TokenizerError, match="258"):
        tok.decode([65, 258])
    with pytest.raises(TokenizerError, match="no bos_token"):
        ByteTokenizer().encode("x", add_bos=True)
    with pytest.raises(TokenizerError, match="not one of the special tokens"):
        ByteTokenizer(["<eos>"], bos_token="<bos>")


def test_byte_tokenizer_recorded_in_config(tmp_path):
    tok = ByteTokenizer(["<pad>", "<eos>"], eos_token="<eos>")
    write_config(tmp_path / "ckpt", vocab_size=258, **{CONFIG_KEY: tok.to_config()})
    loaded = load_tokenizer(tmp_path / "ckpt")
    assert isinstance(loaded, ByteTokenizer) and loaded.to_config() == tok.to_config()
    assert loaded.eos_token_id == 257
    write_config(tmp_path / "small", vocab_size=200, **{CONFIG_KEY: tok.to_config()})
    with pytest.raises(TokenizerError, match="258 ids but the model only 200"):
        load_tokenizer(tmp_path / "small")


def test_no_tokenizer_is_a_clear_error(tmp_path):
    write_config(tmp_path / "c", vocab_size=32000)
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "c")
    (tmp_path / "c" / "tokenizer.model").write_bytes(b"sp")
    with pytest.raises(TokenizerError, match="save_pretrained"):
        load_tokenizer(tmp_path / "c")


def test_stream_decoder_never_splits_a_character():
    tok = ByteTokenizer()
    text = "añ日🙂b"
    dec = StreamDecoder(tok)
    pieces = [dec.feed(i) for i in tok.encode(text)]
    assert "".join(pieces) + dec.flush() == text
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[:2] == ["a", ""]                                 # ñ waits for its second byte
    dec = StreamDecoder(tok)
    dec.feed(0xE6)                                                 # half of 日 at the end of the stream
    assert dec.flush() == "\ufffd"


# ---------------------------------------------------------- Hugging Face
@pytest.fixture
def hf_checkpoint(tmp_path):
    """A tiny byte-level BPE tokenizer.json trained inside the test."""
    import tokenizers                                     # a dev dependency
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20 + ["the quick brown fox jumps over the lazy dog"] * 50, trainer)
    root = tmp_path / "ckpt"
    write_config(root, vocab_size=512, bos_token_id=0, eos_token_id=1)
    tok.save(str(root / "tokenizer.json"))
    return root


@pytest.mark.parametrize("text", TEXTS + ["the quick brown fox"])
def test_hf_round_trip(hf_checkpoint, text):
    tok = load_tokenizer(hf_checkpoint)
    assert isinstance(tok, HFTokenizer) and 258 <= tok.vocab_size <= 320
    ids = tok.encode(text)
    assert all(2 <= i < tok.vocab_size for i in ids)               # specials only when asked for
    assert tok.decode(ids) == text
    with_bos = tok.encode(text, add_bos=True)
    assert with_bos[0] == tok.bos_token_id == 0 and with_bos[1:] == ids
    assert tok.decode(with_bos + [tok.eos_token_id]) == text
    dec = StreamDecoder(tok)
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == text


def test_hf_merges_are_used(hf_checkpoint):
    tok = load_tokenizer(hf_checkpoint)
    text = "the quick brown fox jumps over the lazy dog"
    assert len(tok.encode(text)) < len(text.encode("utf-8")) / 2


def test_hf_errors(hf_checkpoint, tmp_path):
    tok = load_tokenizer(hf_checkpoint)
    with pytest.raises(TokenizerError, match="out of range"):
        tok.decode([tok.vocab_size])
    write_config(hf_checkpoint, vocab_size=100, bos_token_id=0)
    with pytest.raises(TokenizerError, match="the model only 100"):
        load_tokenizer(hf_checkpoint)
    write_config(hf_checkpoint, vocab_size=512, bos_token_id=4000)
    with pytest.raises(TokenizerError, match="bos_token_id 4000"):
        load_tokenizer(hf_checkpoint)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad")


def test_tokenizer_json_without_the_package_says_what_to_install(hf_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)          # import tokenizers -> ImportError
    with pytest.raises(TokenizerError, match="pip install tokenizers"):
        load_tokenizer(hf_checkpoint)


def test_runtime_imports_without_tokenizers():
    code = ("import sys; sys.modules['tokenizers'] = None\n"
            "import mmfree_hls.tokenizer, mmfree_hls.checkpoint\n"
            "from mmfree_hls.tokenizer import ByteTokenizer\n"
            "assert ByteTokenizer().decode(ByteTokenizer().encode('ok')) == 'ok'\n"
            "assert 'tokenizers' not in [m for m, v in sys.modules.items() if v is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
