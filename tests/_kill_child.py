"""Child process for test_kill_resume.py: train with a checkpoint after every batch, resuming from the
checkpoint when one exists.

``python _kill_child.py CKPT pause``: before each step's callback returns and inside each checkpoint
write (the temporary file written and fsynced, not yet renamed over CKPT) the child prints a line
(``batch E B LOSS`` or ``write``) and waits for a line on stdin, so the parent decides where a kill
lands and the run cannot get ahead of it, however fast the machine.
``python _kill_child.py CKPT free MODEL``: runs to the end without pausing, then saves the model.
Both print ``done EPOCHS LOSS`` at the end.
"""

import os
import sys
from pathlib import Path

import numpy as np

import npvae
from npvae.datasets import load_mnist_5k

ckpt, mode = Path(sys.argv[1]), sys.argv[2]
x, _ = load_mnist_5k()
x = x[np.random.default_rng(0).permutation(len(x))[:1280]]


def pause(line: str) -> None:
    print(line, flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("parent closed the pipe")


if mode == "pause":
    real_replace = os.replace

    def paused_replace(src, dst, **kwargs):  # npvae's atomic writer renames its temporary with os.replace
        if Path(dst) == ckpt:  # (Numba's cache writes its files with os.replace too)
            pause("write")
        real_replace(src, dst, **kwargs)

    os.replace = paused_replace

    def report(epoch, batch, n_batches, loss):
        pause(f"batch {epoch} {batch} {loss:.3f}")
else:
    def report(epoch, batch, n_batches, loss):
        pass

if ckpt.exists():
    vae, history = npvae.resume(ckpt, x, on_batch=report)
else:
    vae = npvae.VAE(784, (128,), 8, seed=0)
    history = npvae.train(vae, x, epochs=4, batch_size=32, checkpoint_path=ckpt, checkpoint_every=1,
                          on_batch=report)
if mode == "free":
    vae.save(sys.argv[3])
print("done", len(history), repr(history[-1]["train_loss"]), flush=True)
