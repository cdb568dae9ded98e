"""`mmfree package --tier streamed`: a checkpoint → streamed-weight overlay → same greedy tokens."""

from host_helpers import margin_model

from mmfree_hls import Accelerator
from mmfree_hls.checkpoint import save_checkpoint
from mmfree_hls.cli import main as cli_main


def test_streamed_package_from_a_checkpoint_decodes_like_the_reference(tmp_path, monkeypatch, capsys):
    model = margin_model()
    ckpt = save_checkpoint(model, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)                    # hls_project/ and overlays/ land here
    assert cli_main(["package", str(ckpt), "--board", "kv260", "--tier", "streamed", "--packing", "1.6bit"]) == 0
    assert "tier streamed" in capsys.readouterr().out
    overlay = tmp_path / "overlays" / "kv260" / "tiny_streamed"
    with Accelerator.open(overlay, backend="csim") as acc:
        assert acc.manifest.tier == "streamed"
        got = list(acc.generate([3, 1, 4], 24))
    assert got == model.generate_greedy([3, 1, 4], 24)
