"""npvae.plots on small or unusual inputs: every figure says what it draws and draws each example once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import npvae
from npvae import plots  # the project's own module: imported plainly, so that breaking it fails the suite

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(40, 784)).astype(np.float32)
Y = np.arange(40) % 10


def _title(fig) -> str:
    return fig.axes[0].get_title()


def test_loss_figure_of_one_epoch_has_one_tick_and_no_hidden_point() -> None:
    fig = plots.loss_figure([{"epoch": 1, "seconds": 1.0, "train_loss": 550.0, "val_loss": 545.0}])
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [1]
    FigureCanvasAgg(fig).draw()
    legend = (fig.legends or [ax.get_legend()])[0].get_window_extent()
    for line in ax.get_lines():
        x, y = ax.transData.transform(line.get_xydata()[0])
        assert not legend.contains(x, y), "the legend hides a point"


def test_loss_figure_with_negative_losses_keeps_every_point() -> None:
    """A Gaussian likelihood's losses may be negative: a log axis would drop them."""
    history = [{"epoch": e, "seconds": 1.0, "train_loss": 100.0 - 60 * e, "val_loss": 90.0 - 55 * e}
               for e in range(1, 6)]
    ax = plots.loss_figure(history).axes[0]
    assert ax.get_yscale() == "linear"
    lo, hi = ax.get_ylim()
    assert lo <= -200 and hi >= 40


def test_loss_figure_with_beta_labels_the_loss_and_draws_the_negative_elbo() -> None:
    history = [{"epoch": e, "seconds": 1.0, "beta": 2.0, "train_loss": 300.0 / e, "val_loss": 290.0 / e,
                "val_reconstruction": 270.0 / e, "val_kl": 10.0 / e, "val_nelbo": 280.0 / e} for e in (1, 2)]
    fig = plots.loss_figure(history)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0].startswith("training loss") and labels[1].startswith("validation loss")
    assert labels[2].startswith("validation negative ELBO") and "last 140.0" in labels[2]
    assert "negative ELBO" not in fig.axes[0].get_ylabel()


def test_the_loss_curves_of_an_iwae_model_name_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model of objective="iwae" trains -L_k: save_all's loss curves say so, not "negative ELBO"."""
    drawn: list[tuple[str, str, list[str]]] = []  # title, y label, legend: save_all clears each figure it saves
    real = plots.loss_figure

    def keep(*args: object, **kwargs: object) -> Figure:
        fig = real(*args, **kwargs)  # type: ignore[arg-type]
        ax = fig.axes[0]
        drawn.append((ax.get_title(), ax.get_ylabel(), [t.get_text() for t in fig.legends[0].get_texts()]))
        return fig

    monkeypatch.setattr(plots, "loss_figure", keep)
    history = [{"epoch": e, "seconds": 1.0, "beta": 1.0, "train_loss": 300.0 / e, "val_loss": 290.0 / e}
               for e in (1, 2)]
    plots.save_all(npvae.VAE(784, (8,), 2, objective="iwae", n_samples=3), history, X[:20], Y[:20], tmp_path)
    ((title, ylabel, labels),) = drawn
    assert title == "Loss curves: negative IWAE bound (3 samples) per epoch (lower is better)"
    assert labels[0].startswith("training negative IWAE bound (3 samples)") and len(labels) == 2
    assert "ELBO" not in ylabel and not any("ELBO" in label for label in labels)


def test_loss_figure_of_no_history_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="history is empty"):
        plots.loss_figure([])


@pytest.mark.parametrize("labels", [Y[:5], None], ids=["labels", "no-labels"])
def test_reconstructions_of_few_examples_show_each_once(labels: np.ndarray | None) -> None:
    vae = npvae.VAE(784, (8,), 2)
    fig = plots.reconstructions_figure(vae, X[:5], labels)
    assert _title(fig).startswith("5 held-out examples (upper row) and their reconstructions (lower row)")
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape[0] == 2 * 28 + 3  # one block: a row of originals, a row of reconstructions
    fig = plots.reconstructions_figure(vae, X[:1], None if labels is None else labels[:1])
    assert _title(fig).startswith("1 held-out example (upper row) and its reconstruction (lower row)")


@pytest.mark.parametrize("latent", [1, 2, 3, 5])
@pytest.mark.parametrize("labels", [Y[:1], None], ids=["labels", "no-labels"])
def test_latent_figure_of_one_example_or_without_labels(latent: int, labels: np.ndarray | None) -> None:
    vae = npvae.VAE(784, (8,), latent)
    fig = plots.latent_figure(vae, X[:1], labels)
    assert "of 1 held-out example" in _title(fig) and "examples" not in _title(fig)
    assert ("coloured by class" in _title(fig)) == (labels is not None)
    fig = plots.latent_figure(vae, X, None)
    assert "of 40 held-out examples" in _title(fig) and not fig.legends


def test_samples_title_in_the_singular() -> None:
    assert _title(plots.samples_figure(npvae.VAE(784, (8,), 2), rows=1, cols=1)).startswith("1 sample from")


@pytest.mark.parametrize(("n_classes", "rows"), [(2, 1), (3, 3), (10, 4)])
def test_interpolation_draws_each_pair_of_classes_once(n_classes: int, rows: int) -> None:
    fig = plots.interpolation_figure(npvae.VAE(784, (8,), 2), X, Y % n_classes)
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(names) == rows
    pairs = {frozenset(n.split(" \u2192 ")) for n in names}
    assert len(pairs) == rows and all(len(p) == 2 for p in pairs)


def test_save_figure_to_a_name_ending_in_a_slash_is_refused(tmp_path):
    """``Path`` drops a trailing "/", which would have written a file where the user named a folder."""
    import matplotlib.pyplot as plt

    fig = plt.figure()
    try:
        with pytest.raises(IsADirectoryError):
            plots.save_figure(fig, f"{tmp_path / 'figs'}/")
    finally:
        plt.close(fig)
    assert list(tmp_path.iterdir()) == []
