"""Interrupted and concurrent sweeps (reliability review F5.1-F5.5).

A stub runner stands in for convert + C-sim (as in test_sweep.py), so each case runs in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mmfree_hls.design.sweep import (DamagedResultsWarning, ResultsStore, SweepLock, SweepLockedError,
                                     load_spec, run_sweep)

TINY = {"vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 1, "intermediate_size": 128}
HANG_SEED = 7          # the stub runner hangs on the model with this seed
STUB = '''
import time
from pathlib import Path
from mmfree_hls.config import ModelConfig

class StubRunner:
    def __init__(self, model_spec, *args, **kwargs):
        self.cfg = ModelConfig.from_dict(dict(model_spec["random"]))
        self.hang = model_spec.get("seed") == 7

    def model_config(self):
        return self.cfg

    def convert(self, point, project_dir):
        return {"convert_s": 0.0}

    def measure(self, point, project_dir):
        if self.hang:
            time.sleep(300)
        return {"top1_agreement": 1.0, "greedy_agreement": 1.0, "greedy_identical": True,
                "perplexity": 3.0, "max_logit_err": 0.0, "saturated": {}}
'''


@pytest.fixture
def stub(tmp_path, monkeypatch):
    mod = tmp_path / "stub_mod"
    mod.mkdir()
    (mod / "hostile_stub_runner.py").write_text(STUB)
    monkeypatch.syspath_prepend(str(mod))
    return mod


def spec_dict(hang: bool = False) -> dict:
    """Two points (two models) -- or one model the stub hangs on -- in the plainest sweep file."""
    models = ({"stuck": {"random": TINY, "seed": HANG_SEED}} if hang else
              {"a": {"random": TINY, "seed": 0}, "b": {"random": TINY, "seed": 1}})
    return {"name": "h", "models": models, "grid": {"model": list(models)},
            "runner": "hostile_stub_runner:StubRunner",
            "eval": {"tokens": 16, "prompt_tokens": 4, "greedy_tokens": 4}, "timeout_s": 600}


def spec(hang: bool = False):
    return load_spec(spec_dict(hang))


def hashes(out: Path) -> list[str]:
    return sorted(r["point_hash"] for r in ResultsStore(out).read())


# ------------------------------------------------------------------- F5.1
def test_a_torn_last_line_is_skipped_and_its_point_recomputed(tmp_path, stub):
    out = tmp_path / "out"
    run_sweep(spec(), out, workers=1, progress=False)
    lines = (out / "results.jsonl").read_text().splitlines()
    full = hashes(out)
    (out / "results.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])   # no newline
    with pytest.warns(DamagedResultsWarning, match=r"results.jsonl:2: skipped a damaged line"):
        again = run_sweep(spec(), out, workers=1, progress=False)
    assert again.ran == 1
    assert hashes(out) == full                       # the recomputed row survived (it used to be swallowed)
    assert run_sweep(spec(), out, workers=1, progress=False).ran == 0
    assert (out / "results.damaged.jsonl").read_text() == lines[1][: len(lines[1]) // 2] + "\n"   # kept


# ------------------------------------------------------------ F5.2 / F5.4
@pytest.mark.parametrize("junk", [b"42\n", b"null\n", b"\xff\xfe\x00garbage\n", b"[1, 2]\n"])
def test_junk_lines_warn_and_do_not_crash(tmp_path, stub, junk):
    out = tmp_path / "out"
    run_sweep(spec(), out, workers=1, progress=False)
    with open(out / "results.jsonl", "ab") as f:
        f.write(junk)
    with pytest.warns(DamagedResultsWarning, match="results.jsonl:3"):
        assert run_sweep(spec(), out, workers=1, progress=False).ran == 0


def test_a_row_without_status_is_not_done(tmp_path, stub):
    out = tmp_path / "out"
    run_sweep(spec(), out, workers=1, progress=False)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    rows[0] = {"point_hash": rows[0]["point_hash"]}
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(DamagedResultsWarning, match="status None"):
        assert run_sweep(spec(), out, workers=1, progress=False).ran == 1
    assert all(r.get("status") == "ok" for r in ResultsStore(out).read())


# ------------------------------------------------------------------- F5.5
def test_a_second_sweep_into_the_same_directory_is_refused(tmp_path, stub):
    out = tmp_path / "out"
    out.mkdir()
    with SweepLock(out):
        with pytest.raises(SweepLockedError, match=f"pid {os.getpid()}.*{out}"):
            run_sweep(spec(), out, workers=1, progress=False)
    assert not (out / "results.jsonl").exists()
    assert run_sweep(spec(), out, workers=1, progress=False).ran == 2      # the lock was released


# ------------------------------------------------------------------- F5.3
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _workers_of(out: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"sweep_eval" in cmd and str(out).encode() in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_workers_die_with_a_killed_driver(tmp_path, stub):
    out = tmp_path / "out"
    driver = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(stub)!r})
        from tests_hostile_driver import main
    """)
    (stub / "tests_hostile_driver.py").write_text(textwrap.dedent(f"""
        from mmfree_hls.design.sweep import load_spec, run_sweep
        def main():
            run_sweep(load_spec({spec_dict(hang=True)!r}), {str(out)!r}, workers=1, progress=False)
        main()
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub)] + sys.path))
    proc = subprocess.Popen([sys.executable, "-c", driver], env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not list(out.glob("work/*/*.started")) and time.time() < deadline:
            time.sleep(0.1)
        workers = _workers_of(out)
        assert workers, "the worker never started"
        os.kill(proc.pid, signal.SIGKILL)            # only the driver, as a crash or OOM kill would
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a worker outlived its driver"
    finally:
        for w in _workers_of(out):
            os.kill(w, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def test_a_non_numeric_metric_is_recomputed_not_reported(tmp_path, stub):
    out = tmp_path / "out"
    run_sweep(spec(), out, workers=1, progress=False)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    rows[1]["top1_agreement"] = "abc"
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(DamagedResultsWarning, match="top1_agreement = 'abc' is not a number"):
        assert run_sweep(spec(), out, workers=1, progress=False).ran == 1
