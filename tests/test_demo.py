"""`mmfree demo`: the shipped model end to end (convert, compile, package, decode)."""

import json
from pathlib import Path

from mmfree_hls.cli import main as cli_main
from mmfree_hls.checkpoint import DEMO_CHECKPOINT
from mmfree_hls.design.train import DEMO_MODEL


def test_shipped_model_is_the_demo_architecture():
    cfg = json.loads((DEMO_CHECKPOINT / "config.json").read_text())
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
        assert cfg[field] == getattr(DEMO_MODEL, field)
    size = sum(p.stat().st_size for p in DEMO_CHECKPOINT.iterdir())
    assert size < 5 * 2**20                     # ships in the package


def test_demo_streams_text_and_checks_greedy_agreement(tmp_path, capsys):
    rc = cli_main(["demo", "--project", str(tmp_path / "hls"), "--overlay", str(tmp_path / "overlay"),
                   "--max-new-tokens", "24", "--check-tokens", "32"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "The for statement is used to " in out
    assert "vs the numpy integer reference: identical" in out
    assert (Path(tmp_path / "overlay") / "manifest.json").is_file()
    # a second run reuses the cached project and package
    assert cli_main(["demo", "--project", str(tmp_path / "hls"), "--overlay", str(tmp_path / "overlay"),
                     "--max-new-tokens", "4", "--check-tokens", "0"]) == 0
    assert "is up to date" in capsys.readouterr().out
