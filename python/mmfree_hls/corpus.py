"""The offline training/evaluation corpus: Python's own documentation topics.

``pydoc_data.topics`` ships with every CPython (PSF licence), so the demo
model can be trained and evaluated on any machine with no download.
"""

from __future__ import annotations

import numpy as np

HOLDOUT_FRACTION = 0.05


def corpus_text() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip() for k in sorted(topics))


def corpus_bytes() -> np.ndarray:
    return np.frombuffer(corpus_text().encode("utf-8"), dtype=np.uint8).astype(np.int32)


def split_holdout(data: np.ndarray, fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out): the last ``fraction`` of the corpus is never trained on."""
    cut = int(len(data) * (1 - fraction))
    return data[:cut], data[cut:]
