"""Every public name of ``npvae`` means what the README says, whatever is imported first.

Each check runs in a fresh interpreter (a subprocess), because what is at stake
is the order in which a new session touches names: importing a submodule binds
its name on the package, so a submodule that shares its name with a public
function would replace that function.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "npvae"

# What each documented callable must be: (module it is defined in, class or function)
DOCUMENTED = {
    "VAE": "class", "Dense": "class", "Activation": "class", "GatedDense": "class", "Adam": "class", "SGD": "class",
    "train": "function", "resume": "function", "TrainingDivergedError": "class", "TrainingInterrupted": "class",
    "gradcheck": "function", "check_vjp": "function", "numerical_gradient": "function",
    "GradcheckResult": "class", "save_checkpoint": "function", "load_checkpoint": "function",
    "DataFileError": "class", "DataNotFoundError": "class", "ChecksumError": "class", "CheckpointError": "class",
    "warmup": "function",
    "load_mnist": "function", "load_fashion_mnist": "function", "load_mnist_5k": "function",
    "ProgressBar": "class",
    "log_likelihood": "function", "diagnostics": "function",
}


def submodules(package: Path = PACKAGE) -> list[str]:
    """Dotted names of every module in the source tree, ``npvae.x`` and ``npvae.sub.y`` alike."""
    names = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return names


CHECK = r"""
import importlib, inspect, json, sys
import numpy as np
import npvae
order = json.loads(sys.argv[1])
for step in order:
    if step.startswith("import "):
        importlib.import_module(step[len("import "):])
    elif step.startswith("from "):
        exec(f"from npvae import {step[len('from '):]}")
    else:
        getattr(npvae, step)
bad = []
for name, kind in json.loads(sys.argv[2]).items():
    obj = getattr(npvae, name)
    ok = inspect.isclass(obj) if kind == "class" else inspect.isfunction(obj)
    if not ok:
        bad.append(f"npvae.{name} is {obj!r}, not a {kind}")
if bad:
    sys.exit("\n".join(bad))
x = (np.random.default_rng(0).random((64, 784)) < .3).astype(np.float32)
history = npvae.train(npvae.VAE(784, (32,), 4), x, epochs=1, batch_size=32)
assert len(history) == 1
print("ok", npvae.__file__)
"""


def run_check(order: list[str], cwd: Path, env: dict | None = None, python: str = sys.executable) -> str:
    proc = subprocess.run([python, "-c", CHECK, json.dumps(order), json.dumps(DOCUMENTED)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"order {order}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def test_no_public_name_is_also_a_submodule():
    import npvae

    leaves = {name.split(".")[1] for name in submodules() if "." in name}
    assert not leaves & set(npvae._LAZY), "a submodule's import would rebind these public names"


ORDERS = {
    "exception first (the issue's report)": ["TrainingInterrupted"],
    "resume first": ["resume"],
    "diverged error first": ["TrainingDivergedError"],
    "from npvae import resume": ["from resume"],
    "every submodule imported first": [f"import {m}" for m in submodules()],
    "every submodule in reverse, then every name": [f"import {m}" for m in reversed(submodules())] + sorted(DOCUMENTED),
    "every name, then every submodule": sorted(DOCUMENTED) + [f"import {m}" for m in submodules()],
    "every name in reverse": sorted(DOCUMENTED, reverse=True),
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_documented_names_survive_any_import_order(order, tmp_path):
    run_check(order, cwd=tmp_path)


@pytest.mark.slow
def test_plain_pip_install_holds_every_module_and_the_names_work(tmp_path):
    """A non-editable install: the wheel must hold every module of the source tree (an editable install
    would hide a subpackage that the wheel lacks)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    # The dependencies come from this interpreter's site-packages through a .pth file (no download);
    # npvae itself only from the fresh install, since the editable one is not on that path.
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import numba
    import numpy

    deps = {str(Path(m.__file__).resolve().parents[1]) for m in (numpy, numba)}
    (Path(site) / "_npvae_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    # from a copy of what a clean clone holds: an in-tree build/ folder left by an earlier install would put
    # its stale modules into the wheel
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / "npvae", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    proc = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and "setuptools" in proc.stderr:
        proc = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(source)],
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = Path(site) / "npvae"
    assert installed.is_dir()
    assert submodules(installed) == submodules(), "the wheel lacks modules that the source tree has"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = run_check(["TrainingInterrupted"] + [f"import {m}" for m in submodules()], cwd=tmp_path, env=env,
                    python=python)
    assert str(installed) in out, out
