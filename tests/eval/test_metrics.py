"""Classification metrics against scikit-learn / hand-computed values, and bad input."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from torch import nn

from vfm_course.core import predict
from vfm_course.eval import accuracy, confusion_matrix, evaluate_classifier


def test_accuracy_and_confusion_match_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=g)
    labels = torch.randint(0, 5, (200,), generator=g)
    preds = logits.argmax(1)
    assert accuracy(logits, labels) == pytest.approx((preds == labels).float().mean().item())
    cm = confusion_matrix(preds, labels, 5)
    assert torch.equal(cm, torch.as_tensor(sk_confusion(labels, preds, labels=range(5))))


def test_predict_batches_and_restores_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).train()
    x = torch.randn(37, 3, 2, 2)
    out = predict(model, x, batch_size=8)
    torch.testing.assert_close(out, model(x))
    assert model.training
    y = out.argmax(1)
    res = evaluate_classifier(model, x, y)
    assert res["acc"] == 1.0
    assert res["loss"] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="3 rows but labels has 2"):
        accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="empty batch"):
        accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        predict(nn.Identity(), torch.zeros(2, 3, dtype=torch.long))
