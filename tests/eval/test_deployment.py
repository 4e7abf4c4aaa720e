"""Deployment forms of a course ViT: the exported graph gives the module's logits, int8 dynamic
quantisation shrinks the Linear weights and stays close, bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vfm_course.eval.deployment import (
    deployment_table,
    export_model,
    quantize_int8,
    serialized_megabytes,
)
from vfm_course.models import VisionTransformer, vit_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VisionTransformer(vit_config("vit_course_tiny", num_classes=6)).eval()


def test_the_exported_graph_computes_the_same_logits(model):
    x = torch.rand(8, 3, 32, 32)
    program = export_model(model, x)
    with torch.no_grad():
        assert torch.equal(program.module()(x), model(x))
        other = torch.rand(1, 3, 32, 32)  # not the example it was traced with, nor its size
        assert torch.allclose(program.module()(other), model(other), atol=1e-6)


def test_int8_quantises_every_linear_and_stays_close(model):
    q = quantize_int8(model)
    assert not any(type(m) is nn.Linear for m in q.modules())  # all replaced
    assert any(type(m) is nn.Linear for m in model.modules())  # the original is untouched
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), q(x)
    # int8 weights (per-channel scales) and per-batch activation scales: small, not zero, error
    err = (out - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item()
    assert serialized_megabytes(q) < serialized_megabytes(model) / 3


def test_deployment_table_rows(model):
    x, y = torch.rand(100, 3, 32, 32), torch.randint(0, 6, (100,))  # a last batch of 36
    rows = deployment_table(model, x, y, batch_size=64)
    assert [r.name for r in rows] == ["fp32 eager", "torch.export", "int8 dynamic (Linear)"]
    fp32, exported, int8 = rows
    assert fp32.max_logit_diff == 0 and exported.max_logit_diff < 1e-5
    assert int8.megabytes < fp32.megabytes / 3
    assert all(r.seconds > 0 and 0 <= r.accuracy <= 1 for r in rows)


def test_deployment_table_rejects_too_few_images(model):
    with pytest.raises(ValueError, match="at least batch_size=64"):
        deployment_table(model, torch.rand(10, 3, 32, 32), torch.zeros(10, dtype=torch.long))
