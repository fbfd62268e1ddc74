"""Child process for test_kill_resume.py: train with a checkpoint after every batch,
resuming from the checkpoint when one exists. Prints one line per batch."""

import sys
from pathlib import Path

import numpy as np

import npvae
from npvae.datasets import load_mnist_5k

ckpt = Path(sys.argv[1])
x, _ = load_mnist_5k()
x = x[np.random.default_rng(0).permutation(len(x))[:1280]]


def report(epoch, batch, n_batches, loss):
    print(f"batch {epoch} {batch} {loss:.3f}", flush=True)


if ckpt.exists():
    vae, history = npvae.resume(ckpt, x, on_batch=report)
else:
    vae = npvae.VAE(784, (128,), 8, seed=0)
    history = npvae.train(vae, x, epochs=4, batch_size=32, checkpoint_path=ckpt, checkpoint_every=1,
                          on_batch=report)
print("done", len(history), f"{history[-1]['train_loss']:.3f}", flush=True)
