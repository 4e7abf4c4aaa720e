"""SmallCNN: shapes, backprop, size relative to the course ViT, bad input."""

import pytest
import torch

from vfm_course.models import SmallCNN, VisionTransformer


@pytest.mark.parametrize(("c", "k", "size"), [(3, 6, 32), (1, 10, 8)])
def test_shapes_and_backprop(c: int, k: int, size: int) -> None:
    model = SmallCNN(in_chans=c, num_classes=k)
    x = torch.randn(4, c, size, size)
    logits = model(x)
    assert logits.shape == (4, k)
    assert model.forward_features(x).shape == (4, model.num_features)
    torch.nn.functional.cross_entropy(logits, torch.arange(4) % k).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_not_bigger_than_the_vit() -> None:
    cnn, vit = SmallCNN(), VisionTransformer("vit_course_tiny")
    assert cnn.num_params() < vit.num_params()
    assert SmallCNN(num_classes=0)(torch.randn(2, 3, 32, 32)).shape == (2, 128)


def test_bad_input_is_explained() -> None:
    model = SmallCNN()
    with pytest.raises(ValueError, match="at least 8x8"):
        model(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="images have 1 channels"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="4 dimensions"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="width must be a positive integer"):
        SmallCNN(width=0)
