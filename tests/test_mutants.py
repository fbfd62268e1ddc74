"""Mutation tests: each one-line bug below, planted in a copy of npvae, must make its targeted tests fail.

A test that claims to catch a bug is trusted only after it has been seen to catch it. For each mutant,
the package is copied to a temporary folder, the line is replaced there (the original line must occur
exactly once in the file, so the list cannot rot silently when the code moves), and the targeted tests
run in a subprocess with PYTHONPATH pointing at the copy and ``-p no:cacheprovider -x -q``; the run
must end with exactly one failed test and no error. The unmutated copy must pass the same targets, so
a mutant's failure is the mutation's doing. Two subprocesses run at a time.

Numba's cache. The copy takes the machine code the live package has cached beside its sources
(``__pycache__/*.nbi``, ``*.nbc``, filled by the tests that ran before), so that a mutant of plain
Python (vae.py, the training loop, ...) does not compile every kernel again. Numba checks each cached
file against a hash of its source file, but not against the files its kernels call into: a cached
fused step compiled with the original kernels.py would run the original kernels beside a mutated
kernels.py. So a mutant in any module that compiles kernels (one that imports ``_jit``) runs with no
cached code at all, and compiles what its targets use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "npvae"
GRADIENTS = "tests/test_vae_gradients.py"
EVERY_ENTRY = f"{GRADIENTS}::test_full_loss_gradient_every_entry"
OVER_SHAPES = f"{GRADIENTS}::test_full_loss_gradient_over_shapes"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # relative to npvae/
    within: str  # the top-level function or class the line is in (its name)
    old: str  # the whole original line, stripped of its indentation
    new: str  # its replacement, same indentation
    targets: tuple[str, ...]  # pytest node ids, relative to the project root (options such as -k pass as given)
    why: str


MUTANTS = [
    # ------------------------------------------------------------------ factors dropped from a gradient
    Mutant("kl-logvar-gradient-without-one-half", "kernels.py", "reparam_kl_backward",
           "dr[k + c] = kl_scale * half * (s * s - one)", "dr[k + c] = kl_scale * (s * s - one)",
           (EVERY_ENTRY,), "d KL / d logvar = (sigma^2 - 1) / 2: the 0.5 dropped"),
    Mutant("kl-logvar-gradient-without-one-half, hypothesis", "kernels.py", "reparam_kl_backward",
           "dr[k + c] = kl_scale * half * (s * s - one)", "dr[k + c] = kl_scale * (s * s - one)",
           (OVER_SHAPES,), "the same bug, caught by the shape-sweeping directional test"),
    Mutant("kl-gradient-without-1/B", "vae.py", "VAE",
           "self.dtype.type(self.beta / b))", "self.dtype.type(self.beta))",
           (EVERY_ENTRY,), "the KL gradient's scale beta / B without the 1 / B of the mean over the batch"),
    Mutant("likelihood-gradient-without-1/(B L)", "vae.py", "VAE",
           "return 1.0 / rows", "return 1.0",
           (EVERY_ENTRY,), "the Bernoulli gradient not divided by the B * L rows of the mean"),
    Mutant("gaussian-gradient-without-sigma_dec", "vae.py", "VAE",
           "return 1.0 / (self.sigma_dec**2 * rows)", "return 1.0 / (self.sigma_dec * rows)",
           (EVERY_ENTRY,), "1 / sigma_dec^2 read as 1 / sigma_dec: invisible with sigma_dec = 1"),
    Mutant("kl-gradient-ignores-beta", "vae.py", "VAE",
           "self.dtype.type(self.beta / b))", "self.dtype.type(1.0 / b))",
           (EVERY_ENTRY,), "the loss weighs the KL by beta, its gradient does not: invisible with beta = 1"),
    Mutant("logvar-gradient-ignores-the-noise", "kernels.py", "reparam_kl_backward",
           "dr[k + c] += g * er[c] * sr[c] * half", "dr[k + c] += g * sr[c] * half",
           (EVERY_ENTRY,), "dz/dlogvar = eps * sigma / 2: the eps forgotten"),
    Mutant("every-sample-uses-the-first-noise", "kernels.py", "reparam_kl_forward",
           "zr, er = z[sample * b + i], eps[sample, i]", "zr, er = z[sample * b + i], eps[0, i]",
           (EVERY_ENTRY,),
           "forward draws z from eps[0] for every sample l, backward uses eps[l]: invisible with L = 1"),
    Mutant("tanh-derivative-wrong", "kernels.py", "act_backward_cols",
           "s = one - v * v", "s = one - v",
           (EVERY_ENTRY,), "tanh' = 1 - y^2 written as 1 - y"),
    Mutant("leaky-relu-slope-dropped", "kernels.py", "act_backward_cols",
           "s = one if v > zero else alpha", "s = one if v > zero else zero",
           (EVERY_ENTRY,), "leaky_relu's backward treated as relu's"),
    # ------------------------------------------------------------------ log-variance read as a standard deviation
    Mutant("kernel-sigma-is-exp-logvar", "kernels.py", "reparam_kl_forward",
           "s = _exp_any(lv * half)", "s = _exp_any(lv)",
           (f"{GRADIENTS}::test_logvar_means_log_variance",), "sigma = exp(logvar) instead of exp(logvar / 2)"),
    Mutant("reference-sigma-is-exp-logvar", "reference.py", "reparam_kl_forward",
           "sigma = np.exp(logvar / 2)", "sigma = np.exp(logvar)",
           ("tests/test_kernels.py::test_reparam_kl_forward_and_backward_match_reference",),
           "the reference's sigma = exp(logvar): the kernel must disagree with it"),
    # ------------------------------------------------------------------ the optimizer
    Mutant("adam-without-bias-correction", "optim.py", "adam_kernel_args",
           "return f(lr / (1 - b1**t)), f(b1), f(1 - b1), f(b2), f(1 - b2), f(1 / (1 - b2**t)), f(eps)",
           "return f(lr), f(b1), f(1 - b1), f(b2), f(1 - b2), f(1), f(eps)",
           ("tests/test_optim.py::test_adam_two_steps_by_hand",), "Adam's steps without 1 / (1 - beta^t)"),
    Mutant("reference-adam-without-bias-correction", "reference.py", "adam_update",
           "m_hat = m / (1 - b1**t)", "m_hat = m",
           ("tests/test_kernels.py::test_adam_update_matches_reference",),
           "the reference's first-moment correction dropped: the kernel must disagree with it"),
    # ------------------------------------------------------------------ data checks, allocation, the fused step
    Mutant("nan-check-removed", "_validate.py", "check_data",
           "if not (np.isfinite(lo) and np.isfinite(hi)):", "if False:",
           ("tests/test_validation.py::test_bad_input_gets_a_clear_error[a NaN in the data]",),
           "a NaN in the data no longer stopped at the call"),
    Mutant("array-allocated-every-minibatch", "training/loop.py", "train",
           "idx = batches.indices(order, batch)", "idx = batches.indices(order, batch); np.ones(50_000)",
           ("tests/test_train.py::test_training_allocates_nothing_per_minibatch", "-k", "layers"),
           "400 kB allocated and freed in every step of the batch loop"),
    # ------------------------------------------------------------- the protocol's pieces (issue #13) and the command
    Mutant("gated-gate-derivative-without-(1-g)", "kernels.py", "gated_backward",
           "dsr[j] = u * ar[j] * (one - gv)", "dsr[j] = u * ar[j]",
           ("tests/test_gated.py::test_gated_vae_full_loss_gradient_every_entry",),
           "sigmoid' = g (1 - g) written as g: the gate's gradient"),
    Mutant("bounded-logvar-gradient-passes-outside-the-bounds", "kernels.py", "reparam_kl_backward_bounded",
           "dr[k + c] = dr[k + c] if (raw > lo and raw < hi) else zero", "dr[k + c] = dr[k + c]",
           ("tests/test_logvar_bounds.py::test_bounded_full_loss_gradient_every_entry",),
           "the hardtanh's derivative taken as 1 where logvar is clipped"),
    Mutant("iwae-gradient-without-log-p(z)", "kernels.py", "iwae_latent_backward",
           "g = dzr[c] + w * zr[c]", "g = dzr[c]",
           ("tests/test_iwae.py::test_iwae_full_loss_gradient_every_entry",),
           "the prior's term of the normalized-weight gradient dropped"),
    Mutant("iwae-gradient-without-log-q's-own-logvar", "kernels.py", "iwae_latent_backward",
           "v = dr[k + c] * sr[c] * half + direct", "v = dr[k + c] * sr[c] * half",
           ("tests/test_iwae.py::test_iwae_full_loss_gradient_every_entry",),
           "log q's direct -logvar/2 forgotten: only the path through z kept"),
    Mutant("dynamic-binarization-not-resumed", "training/loop.py", "train",
           'binarize_rng.bit_generator.state = _resume["binarize_rng"]', "pass",
           ("tests/test_training_options.py::test_resume_with_binarization_warmup_and_early_stopping_is_bit_identical",),
           "a resumed run binarizes with a fresh Generator, not the checkpoint's"),
    Mutant("kl-warmup-ignored", "training/schedules.py", "warmup_beta",
           "return beta * min(1.0, epoch / kl_warmup)", "return beta",
           ("tests/test_training_options.py::test_kl_warmup_raises_beta_linearly_and_puts_it_back",),
           "KL warm-up that never warms up"),
    Mutant("early-stopping-keeps-the-last-epoch", "training/loop.py", "train",
           "stopper.restore(vae.params)  # the model leaves with its best epoch's parameters", "pass",
           ("tests/test_training_options.py::test_early_stopping_restores_the_best_epoch",),
           "early stopping that stops but returns the last epoch's parameters"),
    Mutant("command-usage-errors-exit-1", "cli/_common.py", "Parser",
           'self.exit(2, f"{self.prog}: error: {message} (see --help)\\n")',
           'self.exit(1, f"{self.prog}: error: {message} (see --help)\\n")',
           ("tests/test_cli.py::test_bad_input_is_one_line_and_exit_2",),
           "a usage error that exits 1, as a failure would, instead of 2"),
    Mutant("fused-step-ignores-beta", "fused.py", "FusedStep",
           "reals[2] = vae.beta / b", "reals[2] = 1.0 / b",
           ("tests/test_fused.py::test_a_changed_beta_is_used_by_the_next_step",),
           "the fused training step's KL scale without beta"),
]
BY_NAME = {m.name: m for m in MUTANTS}
assert len(BY_NAME) == len(MUTANTS)
#: The unmutated copy runs every target test whole (no -k), so each must pass there.
ALL_TARGETS = tuple(dict.fromkeys(t for m in MUTANTS for t in m.targets if not t.startswith("-")
                                  and m.targets[max(m.targets.index(t) - 1, 0)] != "-k"))
#: Started first, so that the two workers finish together: they compile the fused training step.
SLOW_FIRST = ("fused-step-ignores-beta",)


def _run_pytest(root: Path, targets: tuple[str, ...]) -> subprocess.CompletedProcess:
    """The targeted tests of the live tests/ folder, importing npvae from ``root`` (its copy), whose
    Numba cache is the one in the copy's ``__pycache__`` folders."""
    env = {**os.environ, "PYTHONPATH": str(root), "NPVAE_MUTANT_PACKAGE": str(root / "npvae"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("NUMBA_CACHE_DIR", None)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q", "--rootdir", str(TESTS.parent)]
    args += [t if t.startswith("-") or (i > 0 and targets[i - 1] == "-k") else str(TESTS.parent / t)
             for i, t in enumerate(targets)]
    # cwd is the copy's root: ``python -m pytest`` puts the working directory first on sys.path
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)


def _summary(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _line_index(text: str, mutant: Mutant) -> int:
    """Where ``mutant.old`` is in ``text``: exactly once in the top-level def or class ``mutant.within``."""
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if re.match(rf"(def|class) {re.escape(mutant.within)}\b", ln)]
    assert len(starts) == 1, \
        f"{mutant.name}: top-level {mutant.within!r} found {len(starts)} times in npvae/{mutant.file}"
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i][:1] not in ("", " ", "\t", ")")),
               len(lines))
    hits = [i for i in range(starts[0], end) if lines[i].strip() == mutant.old]
    assert len(hits) == 1, (f"{mutant.name}: {mutant.old!r} found {len(hits)} times in {mutant.within} of "
                            f"npvae/{mutant.file}: update the mutant list")
    return hits[0]


def _compiles_kernels(source: str) -> bool:
    """Whether a module of npvae defines Numba kernels (it imports the one wrapper, ``_jit``)."""
    return re.search(r"^\s*from \.+_jit import|^\s*from npvae\._jit import|^\s*import npvae\._jit",
                     source, re.MULTILINE) is not None


def _cached_code(root: Path) -> list[Path]:
    return [f for f in root.rglob("__pycache__/*") if f.suffix in (".nbi", ".nbc")]


def _apply(root: Path, mutant: Mutant) -> None:
    path = root / "npvae" / mutant.file
    text = path.read_text()
    if mutant.file == "_jit.py" or _compiles_kernels(text):  # others' cached kernels may hold its code: keep none
        for f in _cached_code(root):
            f.unlink()
    i = _line_index(text, mutant)
    lines = text.split("\n")
    lines[i] = lines[i][:len(lines[i]) - len(lines[i].lstrip())] + mutant.new
    path.write_text("\n".join(lines))


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """One copy of npvae with the machine code Numba has cached for it, taken once (others edit the work
    tree meanwhile), that every run copies."""
    root = tmp_path_factory.mktemp("npvae_snapshot")
    shutil.copytree(PACKAGE, root / "npvae", ignore=shutil.ignore_patterns("*.pyc"))
    return root


@dataclass
class Run:
    proc: subprocess.CompletedProcess | None
    seconds: float
    problem: str = ""  # why the run could not be made (the mutant's line not found)


def _run_one(snapshot: Path, mutant: Mutant | None, targets: tuple[str, ...]) -> Run:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npvae_mutant_") as tmp:
        root = Path(tmp) / "root"
        shutil.copytree(snapshot, root)
        if mutant is not None:
            try:
                _apply(root, mutant)
            except AssertionError as exc:
                return Run(None, 0.0, str(exc))
        proc = _run_pytest(root, targets)
    return Run(proc, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def results(request, snapshot) -> dict[str | None, Run]:
    """Every selected mutant's run and the unmutated copy's (key None), two at a time."""
    wanted = {item.callspec.params["name"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_mutant_is_caught"
              and item.module is sys.modules[__name__]}
    jobs: list[tuple[str | None, Mutant | None, tuple[str, ...]]] = [(None, None, ALL_TARGETS)]
    order = [n for n in SLOW_FIRST if n in BY_NAME] + [n for n in BY_NAME if n not in SLOW_FIRST]
    jobs += [(name, BY_NAME[name], BY_NAME[name].targets) for name in order if name in wanted]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_run_one, snapshot, m, targets) for key, m, targets in jobs}
        runs = {key: f.result() for key, f in futures.items()}
    for key, run in runs.items():
        print(f"mutant {key or '(none)'}: {run.seconds:.1f} s, {_summary(run.proc) if run.proc else run.problem}")
    return runs


def test_every_module_with_kernels_runs_its_mutants_without_cached_code() -> None:
    """The rule that keeps a mutated kernel from hiding behind cached code sees every module that jits."""
    jits = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
            if re.search(r"@jit\b|\bjit\(|numba\.n?jit|@n?jit", p.read_text()) and p.name != "_jit.py"}
    seen = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if _compiles_kernels(p.read_text())}
    assert {"kernels.py", "fused.py", "evaluation/kernels.py"} <= jits <= seen, (jits, seen)
    assert "vae.py" not in seen and "training/loop.py" not in seen


@pytest.mark.parametrize("name", list(BY_NAME))
def test_mutant_line_is_found_exactly_once(name: str) -> None:
    mutant = BY_NAME[name]
    _line_index((PACKAGE / mutant.file).read_text(), mutant)
    assert mutant.new != mutant.old


def test_unmutated_copy_passes_every_target(results) -> None:
    proc = results[None].proc
    assert proc is not None and proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = _summary(proc)
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, summary
    assert "skipped" not in summary, f"a target was skipped, so a mutant could not be caught there: {summary}"


@pytest.mark.parametrize("name", list(BY_NAME))
def test_mutant_is_caught(name: str, results) -> None:
    mutant, run = BY_NAME[name], results[name]
    assert run.proc is not None, run.problem
    proc = run.proc
    summary = _summary(proc)
    # exit code 1 and "1 failed": a test failed (-x stops at the first); an error (a broken import, a
    # fixture that crashed) or a usage error would prove nothing about the tests
    assert proc.returncode == 1 and re.search(r"\b1 failed\b", summary) and "error" not in summary, (
        f"mutant {name!r} ({mutant.why}) was not caught by {mutant.targets}: exit code {proc.returncode}, "
        f"{summary!r}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
