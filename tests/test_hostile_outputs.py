"""Output directories and files: nothing of the user's is replaced, writes are atomic, I/O errors are clear.

Reproduces the reliability review's F2.1 (train over a checkpoint), F2.2/F2.3
(convert --force over a user directory, '.', a link), F2.5 (read-only
directory, full disk) and F2.10 (resume with another config).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from mmfree_hls import save_checkpoint
from mmfree_hls.cli import main as cli_main
from mmfree_hls.config import ModelConfig
from mmfree_hls.design.convert import ProjectExistsError, _prepare_dir
from mmfree_hls.design.train import STATE_CONFIG, STATE_DIR, prepare_train_dir
from mmfree_hls.fsio import (MARKER, PROJECT_KIND, NotOursError, OutputError, append_line,
                             atomic_write, ensure_replaceable, make_output_dir)

DEMO = Path(__file__).resolve().parents[1] / "python" / "mmfree_hls" / "data" / "demo_model"


def user_dir(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "thesis.tex").write_text("precious")
    (path / "sub" / "data.csv").write_text("x")
    return path


def intact(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "precious" and (path / "sub" / "data.csv").is_file()


# ------------------------------------------------------------------- train
def test_train_refuses_a_checkpoint_it_did_not_write_even_with_force(tmp_path, tiny_model, capsys):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "tokenizer.json").write_text('{"my": "tokenizer"}')
    (ck / "config.json").write_text("{}")
    for force in (False, True):
        with pytest.raises(FileExistsError):
            prepare_train_dir(ck, tiny_model.config, force=force)
    assert cli_main(["train", "--out", str(ck), "--steps", "1"]) == 2      # refused before training
    assert "did not write" in capsys.readouterr().err
    assert (ck / "tokenizer.json").read_text() == '{"my": "tokenizer"}'


def test_train_over_our_checkpoint_needs_force(tmp_path, tiny_model):
    ck = save_checkpoint(tiny_model, tmp_path / "ck")
    with pytest.raises(FileExistsError, match="pass --force"):
        prepare_train_dir(ck, tiny_model.config)
    assert prepare_train_dir(ck, tiny_model.config, force=True) is False
    assert json.loads((ck / STATE_DIR / STATE_CONFIG).read_text()) == tiny_model.config.to_dict()


def test_train_resumes_only_the_same_config(tmp_path, tiny_model):
    out = tmp_path / "run"
    assert prepare_train_dir(out, tiny_model.config) is False
    assert prepare_train_dir(out, tiny_model.config) is True                # same config: resume
    other = ModelConfig(vocab_size=97, hidden_size=64, num_hidden_layers=3, intermediate_size=48)
    with pytest.raises(FileExistsError, match="another model config.*hidden_size"):
        prepare_train_dir(out, other)
    assert prepare_train_dir(out, other, force=True) is False               # --force starts over
    assert json.loads((out / STATE_DIR / STATE_CONFIG).read_text())["hidden_size"] == 64


# ----------------------------------------------------------------- convert
def test_convert_force_never_deletes_a_user_directory(tmp_path, capsys):
    d = user_dir(tmp_path / "userdir")
    for force in (False, True):
        with pytest.raises(ProjectExistsError, match="not an mmfree HLS project"):
            _prepare_dir(d, "digest", force)
    assert cli_main(["convert", str(DEMO), "--out", str(d), "--no-compile", "--force"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert intact(d)


def test_convert_force_refuses_the_working_directory(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    make_output_dir(proj, PROJECT_KIND)                    # even a project of ours
    (proj / "keep.txt").write_text("keep")
    monkeypatch.chdir(proj)
    with pytest.raises(ProjectExistsError, match="working directory"):
        _prepare_dir(Path("."), "digest", True)
    monkeypatch.chdir(tmp_path)
    user_dir(tmp_path / "u")
    monkeypatch.chdir(tmp_path / "u")
    assert cli_main(["convert", str(DEMO), "--out", ".", "--no-compile", "--force"]) == 2
    assert intact(tmp_path / "u") and (proj / "keep.txt").is_file()


def test_convert_symlink_out_is_a_clear_error(tmp_path):
    target = make_output_dir(tmp_path / "real", PROJECT_KIND)
    (target / "f").write_text("x")
    os.symlink(target, tmp_path / "link")
    with pytest.raises(ProjectExistsError, match="symbolic link"):
        _prepare_dir(tmp_path / "link", "digest", True)
    assert (target / "f").is_file()


def test_an_interrupted_conversion_is_recognised_and_replaceable(tmp_path):
    root = tmp_path / "p"
    assert _prepare_dir(root, "digest", False) is False          # new: marked before anything else
    (root / "firmware").mkdir()
    (root / "firmware" / "half.h").write_text("//")
    with pytest.raises(ProjectExistsError, match="interrupted.*--force"):
        _prepare_dir(root, "digest", False)
    assert _prepare_dir(root, "digest", True) is False
    assert sorted(p.name for p in root.iterdir()) == [MARKER]


# ----------------------------------------------------------------- package
def test_package_force_refuses_the_working_directory_and_its_parents(tmp_path, monkeypatch):
    from mmfree_hls.overlay import _prepare_out
    ov = tmp_path / "ov"
    (ov / "inner").mkdir(parents=True)
    for d in (ov, ov / "inner"):
        (d / "manifest.json").write_text("{}")
    monkeypatch.chdir(ov)
    with pytest.raises(NotOursError, match="is the working directory"):
        _prepare_out(Path("."), True)
    monkeypatch.chdir(ov / "inner")
    with pytest.raises(NotOursError, match="a parent of the working directory"):
        _prepare_out(Path(".."), True)
    assert (ov / "inner" / "manifest.json").is_file()


# -------------------------------------------------------------------- fsio
def test_home_and_root_are_protected(tmp_path):
    from mmfree_hls.fsio import check_not_protected
    for where in (Path.home(), Path("/")):
        with pytest.raises(NotOursError):
            check_not_protected(where)
    check_not_protected(tmp_path / "anything")


def test_atomic_write_keeps_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
    f = tmp_path / "results.json"
    f.write_text("old")
    real_open = open

    def full_disk_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        if "w" in mode and str(path).endswith(".tmp"):
            def write(_data):
                raise OSError(errno.ENOSPC, "No space left on device")
            fh.write = write
        return fh
    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(OutputError, match=r"results\.json: no space left"):
        atomic_write(f, "new")
    monkeypatch.undo()
    assert f.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_read_only_directory_is_named(tmp_path, monkeypatch, capsys):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro" / "x"))
    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(OutputError, match=r"ro/x: permission denied; choose an output directory"):
        atomic_write(tmp_path / "ro" / "x", "data")


def test_cli_turns_os_errors_into_messages(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = cli_main(["import", str(DEMO), str(blocker / "sub")])       # parent is a file: NotADirectoryError
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(blocker) in err


def test_append_line_ends_a_torn_line_first(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text('{"a": 1}\n{"b": ')
    append_line(f, '{"c": 3}')
    assert f.read_text().splitlines() == ['{"a": 1}', '{"b": ', '{"c": 3}']


def test_ensure_replaceable_rules(tmp_path):
    assert ensure_replaceable(tmp_path / "new", "sweep", force=False) is False
    d = make_output_dir(tmp_path / "mine", "sweep")
    (d / "x").write_text("1")
    with pytest.raises(FileExistsError, match="pass --force"):
        ensure_replaceable(d, "sweep", force=False)
    assert ensure_replaceable(d, "sweep", force=True) is True
    with pytest.raises(NotOursError):                             # a marker of another kind
        ensure_replaceable(d, "checkpoint", force=True)


def test_info_on_a_weights_file_says_to_pass_the_directory(capsys):
    assert cli_main(["info", str(DEMO / "model.safetensors")]) == 2
    assert "is a file; pass the checkpoint directory" in capsys.readouterr().err
