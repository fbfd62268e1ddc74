"""Shared test settings and fixtures."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# A first call into a Numba kernel compiles it, far slower than later calls.
settings.register_profile("npvae", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Kernels run as plain Python (NUMBA_DISABLE_JIT=1) are ~1000x slower: fewer examples.
settings.register_profile("nojit", parent=settings.get_profile("npvae"), max_examples=15)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "npvae"))

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NPVAE_SHARED_DATA", PROJECT.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """The Ctrl-C tests play a user at a terminal, where SIGINT raises KeyboardInterrupt. A shell that
    starts the tests in the background (``pytest &``) has them ignore SIGINT, and npvae.train then
    leaves it ignored, as it should: so the session takes Python's default handler, which the processes
    it starts also get (a handler is reset to the default across exec, an ignored signal is not)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_configure(config: pytest.Config) -> None:
    """Under test_mutants.py, the run must test the mutated copy of npvae, never the project's own."""
    expected = os.environ.get("NPVAE_MUTANT_PACKAGE")
    if expected:
        import npvae

        found = Path(npvae.__file__).resolve().parent
        if found != Path(expected).resolve():
            raise pytest.UsageError(f"npvae was imported from {found}, not from the mutated copy {expected}")
