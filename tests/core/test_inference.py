"""The one batched-inference helper and the eval-mode context manager that everything uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vfm_course.core import eval_mode, predict


def dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Dropout(0.5), nn.Linear(5, 3))


def test_predict_equals_one_big_batch_in_eval_mode() -> None:
    model, x = dropout_model(), torch.rand(10, 3, 2, 2)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    out = predict(model, x, batch_size=3)  # 4 batches, the last one short
    assert out.shape == (10, 3) and out.device.type == "cpu"
    # batched rows equal the one-batch result up to float summation order (a few ulps)
    assert (out - expected).abs().max() < 1e-6
    assert model.training  # its mode is put back


def test_map_output_keeps_what_it_returns() -> None:
    model, x = dropout_model(), torch.rand(7, 3, 2, 2)
    ids = predict(model, x, batch_size=2, map_output=lambda logits: logits.argmax(1))
    assert ids.dtype == torch.int64 and ids.shape == (7,)
    assert torch.equal(ids, predict(model, x).argmax(1))


def test_predict_accepts_a_plain_function_and_checks_its_input() -> None:
    out = predict(lambda batch: batch.sum(dim=(1, 2, 3)), torch.ones(5, 1, 2, 2), batch_size=2)
    assert torch.equal(out, torch.full((5,), 4.0))
    with pytest.raises(ValueError, match="batch_size"):
        predict(dropout_model(), torch.rand(2, 3, 2, 2), batch_size=0)


def test_eval_mode_restores_the_mode_even_when_the_body_raises() -> None:
    model = dropout_model().train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError("the model failed")
    assert model.training
    with eval_mode(model.eval()):
        pass
    assert not model.training
