"""One model used for inference from many threads gives each caller exactly its single-threaded answer.

The layers reuse work buffers per number of rows, so two threads running
chunks of the same size through one model used to overwrite each other's
activations (issue #20, item 9). Every chunk here has the same size, the
worst case, and every result is compared bit for bit with the same call made
from one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import npvae

N_CHUNKS, ROWS, THREADS = 48, 32, 8


@pytest.fixture(scope="module")
def vae() -> npvae.VAE:
    return npvae.VAE(input_dim=64, hidden_dims=(96, 48), latent_dim=8, seed=3, dtype=np.float64)


@pytest.fixture(scope="module")
def chunks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.random((ROWS, 64)) for _ in range(N_CHUNKS)]


def _flatten(result: object) -> list[np.ndarray]:
    if isinstance(result, tuple):
        return [a for r in result for a in _flatten(r)]
    if isinstance(result, dict):
        return [np.asarray(result[k]) for k in sorted(result)]
    return [np.asarray(result)]


CALLS: dict[str, Callable[[npvae.VAE, np.ndarray, int], object]] = {
    "encode": lambda v, x, i: v.encode(x),
    "decode": lambda v, x, i: v.decode(x[:, :8] * 4 - 2),
    "reconstruct": lambda v, x, i: v.reconstruct(x),
    "sample": lambda v, x, i: v.sample(ROWS, rng=np.random.default_rng(i)),
    "evaluate": lambda v, x, i: v.evaluate(x, rng=np.random.default_rng(i)),
    "evaluate_terms": lambda v, x, i: v.evaluate_terms(x, rng=np.random.default_rng(i), batch_size=8),
    "loss_terms": lambda v, x, i: v.loss_terms(x, eps=np.random.default_rng(i).standard_normal((ROWS, 8))),
    "loss_and_grads": lambda v, x, i: v.loss_and_grads(x, eps=np.random.default_rng(i).standard_normal((ROWS, 8))),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_inference_from_many_threads_matches_one_thread_exactly(vae: npvae.VAE, chunks: list[np.ndarray],
                                                                 name: str) -> None:
    call = CALLS[name]
    expected = [_flatten(call(vae, x, i)) for i, x in enumerate(chunks)]
    for _ in range(5):
        with ThreadPoolExecutor(THREADS) as pool:
            got = list(pool.map(lambda ix: _flatten(call(vae, ix[1], ix[0])), enumerate(chunks)))
        wrong = [i for i, (e, g) in enumerate(zip(expected, got, strict=True))
                 if any(not np.array_equal(a, b) for a, b in zip(e, g, strict=True))]
        assert not wrong, f"{name}: chunks {wrong} differ from the single-threaded result"


def test_the_model_still_copies_and_trains_after_threaded_use(vae: npvae.VAE, chunks: list[np.ndarray]) -> None:
    """The lock that serializes the entry points survives copy.deepcopy and does not block training."""
    import copy

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(vae.encode, chunks))
    twin = copy.deepcopy(vae)
    npvae.train(twin, np.concatenate(chunks), epochs=1, batch_size=64, fused=False)
    assert np.isfinite(twin.evaluate(chunks[0]))
    mu, _ = twin.encode(chunks[0])
    with ThreadPoolExecutor(THREADS) as pool:
        for m, _ in pool.map(twin.encode, [chunks[0]] * 8):
            np.testing.assert_array_equal(m, mu)
