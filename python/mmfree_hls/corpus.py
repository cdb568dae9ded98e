"""The offline training/evaluation corpus: Python's own documentation topics.

``pydoc_data.topics`` ships with every CPython (PSF licence), so the demo
model can be trained and evaluated on any machine with no download.
"""

from __future__ import annotations

import re

import numpy as np

HOLDOUT_FRACTION = 0.05


def corpus_text() -> str:
    """The topics in a fixed order, with indentation runs folded to one space.

    The raw text is laid out for a terminal; left as is, a small byte-level
    model spends its capacity on runs of spaces and greedy decoding ends in them.
    """
    from pydoc_data.topics import topics
    text = "\n\n".join(topics[k].strip() for k in sorted(topics))
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def corpus_bytes() -> np.ndarray:
    return np.frombuffer(corpus_text().encode("utf-8"), dtype=np.uint8).astype(np.int32)


def split_holdout(data: np.ndarray, fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the last ``fraction`` of the corpus is never trained on."""
    cut = int(len(data) * (1 - fraction))
    return data[:cut], data[cut:]
