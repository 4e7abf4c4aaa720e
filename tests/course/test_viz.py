"""Pictures: each function draws the expected number of panels and rejects bad input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vfm_course.course.viz import (
    plot_confusion,
    plot_data_size,
    plot_history,
    plot_label_efficiency,
    show_attention,
    show_images,
    show_patch_grid,
    to_numpy_image,
)
from vfm_course.train import History  # noqa: E402


def teardown_function():
    plt.close("all")


def test_to_numpy_image_layouts():
    assert to_numpy_image(torch.rand(3, 8, 6)).shape == (8, 6, 3)
    assert to_numpy_image(torch.rand(1, 8, 6)).shape == (8, 6)


def test_show_images_grid_and_titles():
    fig = show_images(torch.rand(10, 3, 8, 8), titles=[str(i) for i in range(10)], ncols=4)
    assert len(fig.axes) == 12
    assert [ax.get_title() for ax in fig.axes[:10]] == [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="10 images but 2 titles"):
        show_images(torch.rand(10, 3, 8, 8), titles=["a", "b"])


def test_patch_grid_and_attention():
    fig = show_patch_grid(torch.rand(3, 16, 16), 4)
    assert len(fig.axes) == 1 + 16
    with pytest.raises(ValueError, match="not divisible by patch size 5"):
        show_patch_grid(torch.rand(3, 16, 16), 5)
    attn = torch.softmax(torch.randn(3, 17, 17), -1)
    assert len(show_attention(torch.rand(3, 16, 16), attn, (4, 4)).axes) == 4
    with pytest.raises(ValueError, match="3x3 grid plus 1 prefix"):
        show_attention(torch.rand(3, 16, 16), attn, (3, 3))


def test_history_and_confusion_plots():
    h = History()
    for s in range(1, 5):
        h.record(s, 1.0 / s, 1e-3, {})
    h.record_eval(4, {"acc": 0.5, "train_acc": 0.9})
    h.seconds = 2.0
    assert len(plot_history({"a": h}, x="seconds").axes) == 2
    fig = plot_history({"a": h}, train_metric="train_acc", chance=0.25)
    acc_lines = [tuple(line.get_ydata()) for line in fig.axes[1].lines]
    assert (0.5,) in acc_lines and (0.9,) in acc_lines and (0.25, 0.25) in acc_lines
    assert len(plot_history({"a": h}, metric=None).axes) == 1
    with pytest.raises(ValueError, match="x must be"):
        plot_history({"a": h}, x="epoch")
    assert plot_confusion(torch.eye(3, dtype=torch.long) * 5, ["a", "b", "c"]).axes


def test_label_efficiency_plot_draws_one_line_per_encoder_with_error_bars():
    table = {
        "MAE": {0.01: (0.3, 0.02), 0.1: (0.5, 0.01), 1.0: (0.6, 0.0)},
        "random": {0.01: (0.2, 0.03), 1.0: (0.25, 0.0)},
    }
    fig = plot_label_efficiency(table, chance=1 / 6)
    ax = fig.axes[0]
    ys = [tuple(line.get_ydata()) for line in ax.lines]
    assert (0.3, 0.5, 0.6) in ys and (0.2, 0.25) in ys and (1 / 6, 1 / 6) in ys
    assert tuple(ax.lines[0].get_xdata()) == (1.0, 10.0, 100.0)  # percent, log axis
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance", "MAE", "random"]


def test_data_size_plot_draws_train_and_test_per_arm():
    fig = plot_data_size({"ViT": {100: (1.0, 0.4), 1000: (0.9, 0.8)}}, chance=1 / 6)
    ys = [tuple(line.get_ydata()) for line in fig.axes[0].lines]
    assert ys[:2] == [(0.4, 0.8), (1.0, 0.9)]  # test solid, then train dashed
    assert fig.axes[0].get_xscale() == "log"
