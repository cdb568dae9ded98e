"""Tokenizers for the runtime: text <-> token ids, on a workstation or a board.

Two kinds, one interface (``encode``, ``decode``, ``vocab_size``,
``bos_token_id``, ``eos_token_id``):

* :class:`HFTokenizer`: a Hugging Face ``tokenizer.json`` (the published
  MMfreeLM models use the 32000-token Llama/Mistral one) through the
  ``tokenizers`` package. That package is an optional dependency -- it has no
  wheels for 32-bit ARM boards -- so it is imported only when a
  ``tokenizer.json`` is actually used.
* :class:`ByteTokenizer`: built in, for our own small models. Ids 0..255 are
  the UTF-8 bytes of the text; special tokens (if any) follow from 256. Plain
  text never encodes to a special id.

:func:`load_tokenizer` picks the tokenizer of a checkpoint directory:
``tokenizer.json`` when present, else the byte tokenizer recorded in
``config.json`` under ``"mmfree_tokenizer"`` (see :meth:`ByteTokenizer.to_config`).
:class:`StreamDecoder` turns a stream of ids into text pieces without ever
emitting half a UTF-8 character.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Protocol, Sequence

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
#: config.json key recording a built-in tokenizer (kept by ModelConfig as an extra field).
CONFIG_KEY = "mmfree_tokenizer"
BYTE_VOCAB = 256


class TokenizerError(ValueError):
    """A tokenizer cannot be loaded or does not fit the model."""


class Tokenizer(Protocol):
    vocab_size: int
    bos_token_id: int | None
    eos_token_id: int | None

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str: ...


def _utf8(text) -> bytes:
    if not isinstance(text, str):
        raise TokenizerError(f"text to encode must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(f"the text is not valid Unicode: characters {e.start}..{e.end - 1} are "
                             "undecodable bytes or lone surrogates (is the input UTF-8?)") from None


def _token_id(i) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, _np_integer())):
        raise TokenizerError(f"token ids must be integers, got {type(i).__name__} {i!r}")
    return int(i)


def _np_integer():
    try:
        import numpy as np
        return np.integer
    except ImportError:                 # pragma: no cover - numpy is a dependency
        return int


# -------------------------------------------------------------------- bytes
class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, then optional special tokens from 256 on."""

    kind = "byte"

    def __init__(self, special_tokens: Sequence[str] = (), bos_token: str | None = None,
                 eos_token: str | None = None):
        if isinstance(special_tokens, (str, bytes)) or not isinstance(special_tokens, (list, tuple)) \
                or not all(isinstance(s, str) and s for s in special_tokens):
            raise TokenizerError(f"special_tokens must be a list of non-empty strings, got {special_tokens!r}")
        for role, tok in (("bos_token", bos_token), ("eos_token", eos_token)):
            if tok is not None and not isinstance(tok, str):
                raise TokenizerError(f"{role} must be a string or null, got {tok!r}")
        self.special_tokens = tuple(special_tokens)
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise TokenizerError(f"duplicate special tokens in {list(self.special_tokens)}")
        for role, tok in (("bos_token", bos_token), ("eos_token", eos_token)):
            if tok is not None and tok not in self.special_tokens:
                raise TokenizerError(f"{role} {tok!r} is not one of the special tokens "
                                     f"{list(self.special_tokens)}")
        self.bos_token, self.eos_token = bos_token, eos_token

    @property
    def vocab_size(self) -> int:
        return BYTE_VOCAB + len(self.special_tokens)

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.token_to_id(self.eos_token)

    def token_to_id(self, token: str) -> int:
        try:
            return BYTE_VOCAB + self.special_tokens.index(token)
        except ValueError:
            raise TokenizerError(f"{token!r} is not a special token of this byte tokenizer") from None

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(_utf8(text))
        if add_bos:
            if self.bos_token_id is None:
                raise TokenizerError("add_bos=True but this byte tokenizer has no bos_token")
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        out, pending = [], bytearray()
        for i in ids:
            i = _token_id(i)
            if 0 <= i < BYTE_VOCAB:
                pending.append(i)
            elif BYTE_VOCAB <= i < self.vocab_size:
                if not skip_special_tokens:
                    out.append(pending.decode("utf-8", errors="replace"))
                    pending.clear()
                    out.append(self.special_tokens[i - BYTE_VOCAB])
            else:
                raise TokenizerError(f"token id {i} is out of range for this byte tokenizer "
                                     f"(vocab_size={self.vocab_size})")
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_config(self) -> dict:
        """The record stored in config.json under ``"mmfree_tokenizer"``."""
        return {"type": self.kind, "special_tokens": list(self.special_tokens),
                "bos_token": self.bos_token, "eos_token": self.eos_token}

    @classmethod
    def from_config(cls, record: dict) -> "ByteTokenizer":
        if not isinstance(record, dict) or record.get("type") != cls.kind:
            raise TokenizerError(f"config.json '{CONFIG_KEY}' = {record!r} is not a byte tokenizer record")
        return cls(record.get("special_tokens", ()), record.get("bos_token"), record.get("eos_token"))

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, special_tokens={list(self.special_tokens)})"


# ---------------------------------------------------------- Hugging Face
def _import_tokenizers(path: Path):
    try:
        import tokenizers
    except ImportError:
        raise TokenizerError(
            f"{path} needs the 'tokenizers' package, which is not installed; "
            "install it with `pip install tokenizers` (or `pip install mmfree-hls[tokenizers]`). "
            "On boards without a wheel for it, tokenize on a workstation and pass token ids."
        ) from None
    return tokenizers


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` through the optional ``tokenizers`` package."""

    kind = "hf"

    def __init__(self, path: str | Path, bos_token_id: int | None = None, eos_token_id: int | None = None):
        self.path = Path(path)
        tokenizers = _import_tokenizers(self.path)
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as e:           # the library raises a bare Exception on bad JSON
            raise TokenizerError(f"{self.path}: not a valid tokenizer.json ({e})") from None
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        for role, i in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id)):
            if i is not None and (isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size):
                raise TokenizerError(f"{role} {i} is outside the tokenizer's vocabulary "
                                     f"(size {self.vocab_size}) in {self.path}")
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        # The tokenizer's own post-processor is bypassed so BOS handling is the same for every kind.
        _utf8(text)
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        if add_bos:
            if self.bos_token_id is None:
                raise TokenizerError("add_bos=True but no bos_token_id is known for this tokenizer")
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        ids = [_token_id(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token id {bad[0]} is out of range for {self.path.name} "
                                 f"(vocab_size={self.vocab_size})")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise TokenizerError(f"{token!r} is not in {self.path}")
        return int(i)

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------- loading
def load_tokenizer(checkpoint_dir: str | Path) -> Tokenizer:
    """The tokenizer of a checkpoint: ``tokenizer.json`` if present, else the recorded byte tokenizer.

    Checks that every id it can produce exists in the model (``vocab_size`` of config.json).
    """
    root = Path(checkpoint_dir)
    config = {}
    if (root / CONFIG_FILE).is_file():
        try:
            config = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise TokenizerError(f"{root / CONFIG_FILE}: not valid UTF-8 JSON ({e})") from None
        if not isinstance(config, dict):
            raise TokenizerError(f"{root / CONFIG_FILE}: expected a JSON object, got {type(config).__name__}")
    if (root / TOKENIZER_FILE).is_file():
        tok: Tokenizer = HFTokenizer(root / TOKENIZER_FILE, config.get("bos_token_id"),
                                     config.get("eos_token_id"))
    elif CONFIG_KEY in config:
        tok = ByteTokenizer.from_config(config[CONFIG_KEY])
    else:
        hint = (" (there is a sentencepiece tokenizer.model: convert it once with transformers: "
                "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) writes tokenizer.json)"
                if (root / "tokenizer.model").is_file() else "")
        raise TokenizerError(f"{root}: no {TOKENIZER_FILE} and no '{CONFIG_KEY}' record in {CONFIG_FILE}"
                             f"{hint}; copy the model's tokenizer.json next to its config.json")
    model_vocab = config.get("vocab_size")
    if isinstance(model_vocab, int) and not isinstance(model_vocab, bool) and tok.vocab_size > model_vocab:
        raise TokenizerError(f"{root}: the tokenizer has {tok.vocab_size} ids but the model only "
                             f"{model_vocab} (vocab_size in config.json); they do not belong together")
    return tok


# --------------------------------------------------------------- streaming
class StreamDecoder:
    """Incremental detokenisation: feed ids one by one, get the new text of each.

    Decodes a short window of recent ids and emits what it adds beyond the
    previously emitted text; a window ending in an incomplete UTF-8 character
    (U+FFFD) waits for the next id. Works for byte-level and BPE tokenizers
    alike (leading-space rules apply to the window's start, which never moves
    past emitted text).
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0      # window start
        self._read = 0        # ids up to here are already emitted

    def feed(self, token_id: int) -> str:
        self.ids.append(_token_id(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is still held back at the end of the stream (possibly a U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        dec = self.tokenizer.decode
        done = dec(self.ids[self._prefix:self._read], self.skip)
        full = dec(self.ids[self._prefix:], self.skip)
        if len(full) <= len(done) or (full.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return full[len(done):]
