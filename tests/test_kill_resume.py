"""SIGKILL a training run at random points, 20 times; the checkpoint always loads and the run always finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from npvae.checkpoint import load_checkpoint

CHILD = Path(__file__).with_name("_kill_child.py")
KILLS = 20


def start(ckpt: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(CHILD), str(ckpt)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigkill_at_random_points_then_resume(tmp_path):
    ckpt = tmp_path / "run.npz"
    rng = np.random.default_rng(2026)
    progress = []
    for _ in range(KILLS):
        proc = start(ckpt)
        # Kill after a random number of finished batches plus a random few milliseconds, so the
        # kills land mid-step, mid-write and between batches whatever the machine's speed.
        lines = [proc.stdout.readline() for _ in range(int(rng.integers(1, 8)))]
        if any(line.startswith("done") for line in lines):
            break
        assert all(line.startswith("batch") for line in lines), "".join(lines) + proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        vae, _, prog = load_checkpoint(ckpt)  # always loads, never half written
        progress.append((prog["epoch"], prog["batch"]))
        assert all(np.all(np.isfinite(p)) for p in vae.params.values())
    assert len(progress) == KILLS, progress
    assert progress == sorted(progress), f"resumed runs went backwards: {progress}"

    proc = start(ckpt)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "done" and last[1] == "4", out[-500:]
    assert np.isfinite(float(last[2]))
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]  # temporaries of killed saves are cleaned up
