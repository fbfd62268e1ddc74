"""Bad input at the public boundary gets a clear error that names the argument.

CASES is also the source of the README's table of bad inputs:
``python tests/test_validation.py`` prints it as Markdown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import npvae
from npvae.errors import CheckpointError

rng = np.random.default_rng(0)
X = rng.random((16, 784)).astype(np.float32)
README = Path(__file__).resolve().parents[1] / "README.md"


def vae(**kw) -> npvae.VAE:
    args = dict(input_dim=784, hidden_dims=(8,), latent_dim=2, seed=0)
    args.update(kw)
    return npvae.VAE(**args)


def with_nan() -> np.ndarray:
    x = X.copy()
    x[3, 4] = np.nan
    return x


def rebind_a_parameter() -> None:
    vae().params["decoder.out.b"] = np.zeros(784, np.float32)


def one_optimizer_for_two_models() -> None:
    a, b = vae(), vae(hidden_dims=(4,))
    opt = npvae.Adam()
    opt.step(a.params, a.loss_and_grads(X)[1])
    opt.step(b.params, b.loss_and_grads(X)[1])


def save_over_a_read_only_file() -> None:
    vae().save("model.npz")
    os.chmod("model.npz", 0o444)
    vae().save("model.npz")


def resume_with_fewer_epochs_than_done() -> None:
    npvae.train(vae(), X, epochs=3, batch_size=8, checkpoint_path="run.npz")
    npvae.resume("run.npz", X, epochs=2)


def model_arrays(**kw) -> dict:
    v = vae(**kw)
    meta = {"format": "npvae", "version": 1, "kind": "model", "config": v.config()}
    return {**{f"param/{k}": p for k, p in v.params.items()}, "meta": np.array(json.dumps(meta))}


def load_npz(name: str, arrays: dict) -> None:
    with open(name, "wb") as fh:
        np.savez(fh, **arrays)
    npvae.VAE.load(name)


def load_a_truncated_checkpoint() -> None:
    vae().save("run.npz")
    Path("run.npz").write_bytes(Path("run.npz").read_bytes()[:300])
    npvae.VAE.load("run.npz")


def load_another_architecture() -> None:
    arrays = model_arrays()
    arrays["param/encoder.0.W"] = np.zeros((784, 9), np.float32)
    load_npz("m.npz", arrays)


def load_a_future_format() -> None:
    arrays = model_arrays()
    arrays["meta"] = np.array(json.dumps({**json.loads(str(arrays["meta"])), "version": 99}))
    load_npz("v.npz", arrays)


def load_pickled_objects() -> None:
    arrays = model_arrays()
    arrays["param/encoder.0.b"] = np.array([object()] * 8, dtype=object)
    load_npz("p.npz", arrays)


# (what, call, exception, the whole message, whether the README's table shows it). The calls run in an
# empty folder, so that the file names in the messages are short.
CASES: list[tuple[str, Callable[[], object], type[Exception], str, bool]] = [
    ("pixels as integers 0..255", lambda: vae().loss_and_grads((X * 255).astype(np.uint8)), TypeError,
     "x must be a floating-point array, got dtype uint8 (scale integer pixels to [0, 1] first, e.g. x / 255.0)", True),
    ("pixels 0..255 as floats (Bernoulli)", lambda: vae().loss_and_grads(X * 255), ValueError,
     "x must lie in [0, 1] for the Bernoulli likelihood, got values in [0.0275417, 254.999] (divide by 255?)", True),
    ("a NaN in the data", lambda: vae().evaluate(with_nan()), ValueError,
     "x contains 1 NaN or infinite value(s)", True),
    ("images not flattened (n, 28, 28)", lambda: vae().loss_and_grads(X.reshape(16, 28, 28)), ValueError,
     "x must have shape (n, 784), got shape (16, 28, 28)", True),
    ("wrong width", lambda: vae().loss_and_grads(X[:, :780]), ValueError,
     "x must have 784 columns (shape (n, 784)), got shape (16, 780)", True),
    ("a single image, 1-D", lambda: vae().encode(X[0]), ValueError, "x must have shape (n, 784), got shape (784,)",
     True),
    ("empty array", lambda: vae().evaluate(X[:0]), ValueError, "x is empty (shape (0, 784)); need at least one row",
     True),
    ("a list instead of an array", lambda: vae().loss_and_grads(X.tolist()), TypeError,
     "x must be a NumPy array, got list of length 16 (convert with np.asarray(..., dtype=np.float32))", True),
    ("latent_dim=0", lambda: vae(latent_dim=0), ValueError, "latent_dim must be >= 1, got 0", True),
    ("hidden size 0", lambda: vae(hidden_dims=(8, 0)), ValueError, "hidden_dims[] must be >= 1, got 0", False),
    ("unknown likelihood", lambda: vae(likelihood="poisson"), ValueError,
     "likelihood must be one of 'bernoulli', 'gaussian'; got 'poisson'", True),
    ("unknown activation", lambda: vae(activation="gelu"), ValueError,
     "activation must be one of 'identity', 'relu', 'leaky_relu', 'tanh', 'sigmoid', 'softplus'; got 'gelu'", False),
    ("negative beta", lambda: vae(beta=-1), ValueError, "beta must be >= 0, got -1", False),
    ("integer dtype", lambda: vae(dtype=np.int32), TypeError,
     "dtype must be np.float32 or np.float64, got int32", True),
    ("n_samples=0", lambda: vae(n_samples=0), ValueError, "n_samples must be >= 1, got 0", False),
    ("sigma_dec=0", lambda: vae(likelihood="gaussian", sigma_dec=0.0), ValueError, "sigma_dec must be > 0, got 0",
     False),
    ("eps of the wrong shape", lambda: vae().loss_and_grads(X, eps=np.zeros((16, 3))), ValueError,
     "eps must have shape (16, 2) or (1, 16, 2) (n_samples, batch, latent_dim), got (16, 3)", True),
    ("assigning into vae.params", rebind_a_parameter, TypeError,
     "vae.params['decoder.out.b'] cannot be rebound: the layers and the optimizer hold the array itself, so a new "
     "array would be used by some of them and not others. Write into it in place instead: "
     "vae.params['decoder.out.b'][...] = value", True),
    ("negative learning rate", lambda: npvae.Adam(lr=-1e-3), ValueError, "lr must be > 0, got -0.001", True),
    ("momentum of 1 or more", lambda: npvae.SGD(lr=0.1, momentum=1.0), ValueError, "momentum must be < 1, got 1",
     False),
    ("the class instead of an optimizer", lambda: npvae.train(vae(), X, epochs=1, batch_size=8, optimizer=npvae.Adam),
     TypeError, "optimizer must be an instance such as npvae.Adam(), got the class npvae.Adam itself (call it: "
     "npvae.Adam(lr=...))", True),
    ("one optimizer for two models", one_optimizer_for_two_models, ValueError,
     "Adam's state encoder.0.W.m has shape (784, 8) and dtype float32, but params['encoder.0.W'] has shape (784, 4) "
     "and dtype float32: the state was made for another model. Use a fresh optimizer for each model (npvae.Adam()), "
     "or call opt.reset() to forget the state first.", True),
    ("batch size larger than the data", lambda: npvae.train(vae(), X, epochs=1, batch_size=64), ValueError,
     "batch_size (64) is larger than the training set (16 examples)", True),
    ("batch_size=0", lambda: npvae.train(vae(), X, epochs=1, batch_size=0), ValueError,
     "batch_size must be >= 1, got 0", False),
    ("epochs as a float", lambda: npvae.train(vae(), X, epochs=2.5), TypeError,
     "epochs must be an integer, got float 2.5", True),
    ("uint8 data without pixel_scale", lambda: npvae.train(vae(), (X * 255).astype(np.uint8), epochs=1, batch_size=8),
     TypeError, "x_train must be a floating-point array, got dtype uint8 (scale integer pixels to [0, 1] first, e.g. "
     "x / 255.0), or pass pixel_scale=1/255 to have train() scale each batch (a quarter of the memory)", True),
    ("validation set of another width", lambda: npvae.train(vae(), X, epochs=1, batch_size=4, x_val=X[:, :5]),
     ValueError, "x_val must have 784 columns (shape (n, 784)), got shape (16, 5)", False),
    ("not a model", lambda: npvae.train("vae", X), TypeError, "vae must be an npvae.VAE, got str", False),
    ("clip_norm=0", lambda: npvae.train(vae(), X, epochs=1, batch_size=4, clip_norm=0), ValueError,
     "clip_norm must be > 0, got 0", False),
    ("a checkpoint folder that does not exist",
     lambda: npvae.train(vae(), X, epochs=1, batch_size=8, checkpoint_path="runs/run.npz"), FileNotFoundError,
     "checkpoint_path runs/run.npz: the folder runs does not exist", True),
    ("early stopping without validation data",
     lambda: npvae.train(vae(), X, epochs=1, batch_size=8, early_stopping=5), ValueError,
     "early_stopping needs validation data: pass x_val", True),
    ("resume with fewer epochs than done", resume_with_fewer_epochs_than_done, ValueError,
     "epochs=2, but run.npz has already finished 3 epochs; give epochs=3 or more (the total, not the remainder)", True),
    ("sample(0)", lambda: vae().sample(0), ValueError, "n must be >= 1, got 0", False),
    ("decode with the wrong latent size", lambda: vae().decode(np.zeros((3, 5), np.float32)), ValueError,
     "z must have 2 columns (shape (n, 2)), got shape (3, 5)", False),
    ("saving over a read-only file", save_over_a_read_only_file, PermissionError,
     "[Errno 13] refusing to replace model.npz: it is read-only (mode 0o444); make it writable (chmod u+w model.npz) "
     "if it should be overwritten, or write elsewhere", True),
    ("saving to a folder", lambda: vae().save("runs/"), IsADirectoryError,
     "[Errno 21] cannot write runs/: it is a directory name (it ends with '/'), not a file name; name a file inside it",
     True),
    ("a truncated checkpoint", load_a_truncated_checkpoint, CheckpointError,
     "run.npz: not a readable .npz file: truncated, or not an .npz at all (File is not a zip file)", True),
    ("a checkpoint of another architecture", load_another_architecture, CheckpointError,
     "m.npz: parameter 'encoder.0.W' has shape (784, 9) and dtype float32, but the architecture needs (784, 8) and "
     "float32", True),
    ("a checkpoint from a future format", load_a_future_format, CheckpointError,
     "v.npz: format version 99 is not supported by this npvae (reads version 1); save it again with a matching npvae "
     "version", True),
    ("an `.npz` holding pickled objects", load_pickled_objects, CheckpointError,
     "p.npz: member 'param/encoder.0.b.npy' holds Python objects; refusing to load", True),
]


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def raised(call: Callable[[], object], exc: type[Exception]) -> Exception:
    with pytest.raises(exc) as info:
        call()
    return info.value


@pytest.mark.parametrize("what,call,exc,message,shown", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(in_empty_folder, what, call, exc, message, shown):
    error = raised(call, exc)
    assert type(error) is exc
    assert str(error) == message


def table_row(what: str, error: Exception) -> str:
    return f"| {what} | `{type(error).__name__}: {error}` |"


def test_readme_rows_come_from_these_cases(in_empty_folder):
    """Each README row of these errors is exactly what the case raises, and every row of the table is a case
    here or one of test_datasets.py's data rows."""
    readme = README.read_text()
    for what, call, exc, _, shown in CASES:
        if shown:
            assert table_row(what, raised(call, exc)) in readme, what
    table = readme[readme.index("| bad input | error |"):]
    table = table[:table.index("\n\n")]
    shown_here = {c[0] for c in CASES if c[4]}
    for line in table.splitlines()[2:]:
        what = line.split(" | ")[0][2:]
        assert what in shown_here or "load_mnist(" in what, f"README row without a test: {line[:80]}"


def test_float64_data_into_a_float32_model_is_converted_not_rejected():
    v = vae()
    loss64 = v.evaluate(X.astype(np.float64))
    assert loss64 == v.evaluate(X)


def test_gaussian_model_accepts_values_outside_unit_range():
    v = vae(likelihood="gaussian")
    assert np.isfinite(v.evaluate(X * 10 - 5))


def markdown_table() -> str:
    """The README's rows for these cases, in their order (run in an empty folder)."""
    import tempfile

    os.chdir(tempfile.mkdtemp())
    rows = ["| bad input | error |", "| --- | --- |"]
    for what, call, exc, _, shown in CASES:
        if shown:
            try:
                call()
            except exc as e:
                rows.append(table_row(what, e))
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())


# ------------------------------------------------------------------ issue #20, item 12
@pytest.mark.parametrize("method", ["evaluate", "evaluate_terms", "sample"])
def test_an_int_seed_is_accepted_wherever_an_rng_is(method):
    v = vae()
    arg = 5 if method == "sample" else X
    seeded = getattr(v, method)(arg, rng=3)
    generator = getattr(v, method)(arg, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(seeded, generator)
    with pytest.raises(TypeError, match=r"^rng must be a np.random.Generator or an int seed, got str 'abc'"):
        getattr(v, method)(arg, rng="abc")
    with pytest.raises(TypeError, match=r"rng must be a np.random.Generator or an int seed, got RandomState"):
        getattr(v, method)(arg, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="rng must be >= 0, got -1"):
        getattr(v, method)(arg, rng=-1)


def test_check_rng_helper():
    from npvae._validate import check_rng

    g = np.random.default_rng(1)
    assert check_rng("rng", g, None) is g
    assert check_rng("rng", None, g) is g
    assert check_rng("rng", 7, None).standard_normal() == np.random.default_rng(7).standard_normal()
    assert check_rng("rng", None, 7).standard_normal() == np.random.default_rng(7).standard_normal()
    assert isinstance(check_rng("rng", None, None), np.random.Generator)
    with pytest.raises(TypeError, match="seed must be a np.random.Generator or an int seed, got bool True"):
        check_rng("seed", True, None)


def test_decode_takes_integer_codes_and_names_latent_codes_otherwise():
    v = vae()
    np.testing.assert_array_equal(v.decode(np.zeros((2, 2), dtype=int)), v.decode(np.zeros((2, 2), np.float32)))
    with pytest.raises(TypeError) as info:
        v.decode(np.zeros((2, 2), dtype=bool))
    assert "z must be a floating-point array of latent codes" in str(info.value)
    assert "pixel" not in str(info.value) and "255" not in str(info.value)


def test_n_samples_can_be_changed_after_construction():
    v, fresh = vae(), vae(n_samples=3)
    v.n_samples = 3
    eps = np.random.default_rng(0).standard_normal((3, 16, 2))
    loss, grads = v.loss_and_grads(X, eps)
    loss3, grads3 = fresh.loss_and_grads(X, eps)
    assert loss == loss3 and v.n_samples == 3 and v.config()["n_samples"] == 3
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads3[k])
    assert np.isfinite(v.evaluate(X)) and np.isfinite(v.loss_terms(X)[0])
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        v.n_samples = 0
    with pytest.raises(TypeError, match="n_samples must be an integer, got float 2.0"):
        v.n_samples = 2.0
    assert v.n_samples == 3


@pytest.mark.parametrize("attr,value,exc,fragment", [
    ("beta", -1, ValueError, "beta must be >= 0, got -1"),
    ("beta", float("nan"), ValueError, "beta must be finite, got nan"),
    ("beta", "1", TypeError, "beta must be a number, got str '1'"),
    ("sigma_dec", 0.0, ValueError, "sigma_dec must be > 0, got 0"),
    ("sigma_dec", float("inf"), ValueError, "sigma_dec must be finite, got inf"),
    ("sigma_dec", None, TypeError, "sigma_dec must be a number, got NoneType None"),
])
def test_beta_and_sigma_dec_assignment_is_validated(attr, value, exc, fragment):
    v = vae(likelihood="gaussian")
    before = getattr(v, attr)
    with pytest.raises(exc) as info:
        setattr(v, attr, value)
    assert type(info.value) is exc and fragment in str(info.value), str(info.value)
    assert getattr(v, attr) == before


def test_beta_and_sigma_dec_assignment_takes_effect():
    v, ref = vae(likelihood="gaussian"), vae(likelihood="gaussian", beta=0.5, sigma_dec=2.0)
    v.beta, v.sigma_dec = np.float32(0.5), 2
    assert type(v.beta) is float and type(v.sigma_dec) is float
    eps = np.zeros((16, 2))
    assert v.loss_and_grads(X, eps)[0] == ref.loss_and_grads(X, eps)[0]


def test_a_value_just_outside_the_range_is_printed_with_enough_digits():
    x = X.copy()
    x[2, 3] = 1.0000001
    with pytest.raises(ValueError) as info:
        vae().evaluate(x)
    assert "1.0000001]" in str(info.value), str(info.value)
    with pytest.raises(ValueError, match=r"betas\[1\] must be < 1, got 1.0000001$"):
        npvae.Adam(betas=(0.9, 1.0000001))
    with pytest.raises(ValueError, match=r"beta must be >= 0, got -1e-12$"):
        vae(beta=-1e-12)
    with pytest.raises(ValueError, match=r"momentum must be < 1, got 1$"):
        npvae.SGD(lr=0.1, momentum=1.0)


# ------------------------------------------------------------------ issue #20, item 10
def test_params_refuse_rebinding_and_say_to_write_in_place():
    from collections.abc import Mapping

    v = vae()
    names = list(v.params)
    b = v.params["decoder.out.b"]
    with pytest.raises(TypeError) as info:
        v.params["decoder.out.b"] = np.ones(12, np.float32)
    msg = str(info.value)
    assert "vae.params['decoder.out.b'] cannot be rebound" in msg and "vae.params['decoder.out.b'][...] = " in msg
    with pytest.raises(TypeError, match="cannot be rebound"):
        v.grads["decoder.out.b"] = np.ones(12, np.float32)
    with pytest.raises(TypeError, match="cannot be removed"):
        del v.params["encoder.0.W"]
    with pytest.raises(AttributeError, match="vae.params cannot be replaced"):
        v.params = {}
    v.params["decoder.out.b"][...] = 0.25  # in place: the forward pass sees it
    assert v.params["decoder.out.b"] is b and v.out.params["b"] is b and np.all(b == 0.25)
    assert isinstance(v.params, Mapping) and list(v.params) == names and len(v.params) == len(names)
    assert [k for k, _ in v.params.items()] == names and all(a is v.params[k] for k, a in v.params.items())
    assert {**v.params}.keys() == set(names) and "encoder.0.W" in v.params


def test_an_internal_rebind_keeps_the_layers_the_mappings_and_save_in_step(tmp_path):
    """VAE._rebind_param (for code that lays the parameters out itself) moves every holder at once."""
    v = vae(dtype=np.float64)
    flat = np.zeros(v.params["decoder.out.b"].size + 1)
    new_b, new_g = flat[1:], np.zeros(784)
    new_b[...] = 0.5
    v._rebind_param("decoder.out.b", new_b, new_g)
    assert v.params["decoder.out.b"] is new_b and v.out.params["b"] is new_b
    assert v.grads["decoder.out.b"] is new_g and v.out.grads["b"] is new_g
    v.loss_and_grads(X, np.zeros((16, 2)))
    assert np.any(new_g != 0)
    v.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(npvae.VAE.load(tmp_path / "m.npz").params["decoder.out.b"], new_b)
    with pytest.raises(ValueError, match=r"param for 'decoder.out.b' must be a C-contiguous array of shape \(784,\)"):
        v._rebind_param("decoder.out.b", np.zeros(11), np.zeros(784))
