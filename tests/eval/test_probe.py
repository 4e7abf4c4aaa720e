"""Frozen-feature evaluation against scikit-learn: kNN and the linear probe give its answers."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from vfm_course.eval import (
    extract_features,
    knn_accuracy,
    knn_predict,
    label_efficiency,
    label_efficiency_features,
    labelled_subset,
    linear_probe,
    probe,
    probe_encoder,
    probe_features,
)


def _random_set(n: int, D: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    return x, torch.randint(0, K, (n,), generator=g)


def _blobs(n: int, D: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs that overlap (so neither probe is perfect), with uneven feature scales."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, D, generator=torch.Generator().manual_seed(99)) * 0.5
    y = torch.randint(0, K, (n,), generator=g)
    x = centres[y] + torch.randn(n, D, generator=g)
    scales = torch.linspace(0.1, 10.0, D)  # standardisation must undo these
    return (x * scales + 3.0).float(), y


# ----------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_majority_vote_equals_sklearn(k: int) -> None:
    train_x, train_y = _random_set(300, 8, 5, seed=0)
    test_x, _ = _random_set(200, 8, 5, seed=1)
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    expected = ref.fit(train_x.numpy(), train_y.numpy()).predict(test_x.numpy())
    ours = knn_predict(train_x, train_y, test_x, k=k)
    assert ours.dtype == torch.int64
    assert torch.equal(ours, torch.from_numpy(expected).long())  # ties included (k=20, K=5)
    # float32 features give (almost always) the same neighbours.
    ours32 = knn_predict(train_x.float(), train_y, test_x.float(), k=k)
    assert (ours32 == ours).float().mean() > 0.99


def test_knn_weighted_vote_equals_a_plain_loop() -> None:
    train_x, train_y = _random_set(120, 6, 4, seed=2)
    test_x, _ = _random_set(30, 6, 4, seed=3)
    k, t = 10, 0.1
    expected = []
    for q in test_x:
        sims = torch.nn.functional.cosine_similarity(q[None], train_x, dim=1)  # (n_train,)
        order = sims.argsort(descending=True)[:k]
        scores = [0.0] * 4
        for j in order.tolist():
            scores[int(train_y[j])] += float(torch.exp(sims[j] / t))
        expected.append(max(range(4), key=lambda c: (scores[c], -c)))
    assert knn_predict(train_x, train_y, test_x, k=k, temperature=t).tolist() == expected


def test_knn_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    train_x, train_y = _random_set(100, 5, 3, seed=4)
    test_x, test_y = _random_set(50, 5, 3, seed=5)
    whole = knn_predict(train_x, train_y, test_x, k=7, temperature=0.07)
    monkeypatch.setattr(probe, "_KNN_CHUNK", 7)
    assert torch.equal(knn_predict(train_x, train_y, test_x, k=7, temperature=0.07), whole)
    acc = knn_accuracy(train_x, train_y, test_x, test_y, k=7, temperature=0.07)
    assert acc == pytest.approx((whole == test_y).double().mean().item())


# ----------------------------------------------------------------------------- linear probe


def test_linear_probe_agrees_with_sklearn_logistic_regression() -> None:
    K, D, wd = 4, 10, 1e-2
    train_x, train_y = _blobs(400, D, K, seed=0)
    test_x, test_y = _blobs(400, D, K, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, weight_decay=wd, max_iter=200)

    scaler = StandardScaler().fit(train_x.double().numpy())
    ref = LogisticRegression(C=1 / (len(train_x) * wd), max_iter=2000, tol=1e-10)
    ref.fit(scaler.transform(train_x.double().numpy()), train_y.numpy())
    expected = torch.from_numpy(ref.predict(scaler.transform(test_x.double().numpy())))
    ours = result.predict(test_x)
    assert (ours == expected).double().mean() >= 0.98
    ref_test_acc = (expected == test_y).double().mean().item()
    ref_train_acc = ref.score(scaler.transform(train_x.double().numpy()), train_y.numpy())
    assert abs(result.test_acc - ref_test_acc) <= 0.01
    assert abs(result.train_acc - ref_train_acc) <= 0.01
    assert 0.5 < result.test_acc < 1.0  # an informative, not trivial, problem
    # Both solve the same convex problem, so the solutions themselves agree.
    torch.testing.assert_close(result.weight, torch.from_numpy(ref.coef_), atol=1e-4, rtol=0)
    torch.testing.assert_close(result.mean, torch.from_numpy(scaler.mean_), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.std, torch.from_numpy(scaler.scale_), atol=1e-6, rtol=0)
    assert result.weight.shape == (K, D) and result.bias.shape == (K,)


def test_linear_probe_is_deterministic_and_weight_decay_shrinks_weights() -> None:
    train_x, train_y = _blobs(200, 6, 3, seed=2)
    test_x, test_y = _blobs(100, 6, 3, seed=3)
    a = linear_probe(train_x, train_y, test_x, test_y)
    b = linear_probe(train_x, train_y, test_x, test_y)
    assert torch.equal(a.weight, b.weight) and a.test_acc == b.test_acc
    strong = linear_probe(train_x, train_y, test_x, test_y, weight_decay=10.0)
    assert strong.weight.norm() < 0.2 * a.weight.norm()


# ----------------------------------------------------------------------------- features


def test_extract_features_equals_a_direct_forward_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5)
    )
    images = torch.rand(10, 3, 8, 8)
    encoder.train()
    encoder(images)  # give BatchNorm running statistics, so eval and train modes differ
    feats = extract_features(encoder, images, batch_size=3)
    assert encoder.training  # put back in train mode
    encoder.eval()
    with torch.no_grad():
        direct = encoder(images)
    torch.testing.assert_close(feats, direct, atol=1e-6, rtol=0)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    extract_features(encoder, images)
    assert not encoder.training  # eval stays eval


def test_probe_errors() -> None:
    x, y = _random_set(20, 4, 3, seed=0)
    with pytest.raises(ValueError, match="20 rows but train_y has 19"):
        knn_predict(x, y[:19], x)
    with pytest.raises(ValueError, match="positive integer"):
        knn_predict(x, y, x, k=0)
    with pytest.raises(ValueError, match="only 20 training rows"):
        knn_predict(x, y, x, k=21)
    with pytest.raises(ValueError, match="2 dimensions"):
        knn_predict(x[:, :, None], y, x)
    with pytest.raises(TypeError, match="integer class ids"):
        linear_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="same width"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="num_classes=0"):
        extract_features(nn.Identity(), torch.rand(2, 3, 4, 4))


# ----------------------------------------------------------------------------- label efficiency


def test_labelled_subset_is_class_balanced_seeded_and_sorted() -> None:
    y = torch.arange(6).repeat_interleave(torch.tensor([100, 200, 300, 100, 100, 200]))
    idx = labelled_subset(y, 0.1, seed=0)
    assert torch.bincount(y[idx]).tolist() == [10, 20, 30, 10, 10, 20]
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == len(idx)
    assert torch.equal(idx, labelled_subset(y, 0.1, seed=0))
    assert not torch.equal(idx, labelled_subset(y, 0.1, seed=1))
    assert torch.equal(labelled_subset(y, 1.0, seed=3), torch.arange(len(y)))
    assert torch.bincount(y[labelled_subset(y, 0.001, seed=0)]).tolist() == [1] * 6  # >= 1 each
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="share of the labels"):
            labelled_subset(y, bad, seed=0)


def test_label_efficiency_equals_probes_on_the_same_subsets() -> None:
    x, y = _blobs(600, 6, 3, seed=0)
    test = _blobs(300, 6, 3, seed=1)
    flat = nn.Flatten()  # "images" (n, D, 1, 1) -> features (n, D): the encoder is the identity
    table = label_efficiency(
        {"flat": flat},
        (x[:, :, None, None], y),
        (test[0][:, :, None, None], test[1]),
        fractions=(0.05, 1.0),
        seeds=(0, 1),
    )
    expected = [
        linear_probe(x[idx], y[idx], test[0], test[1]).test_acc
        for idx in (labelled_subset(y, 0.05, 0), labelled_subset(y, 0.05, 1))
    ]
    mean, std = table["flat"][0.05]
    assert mean == pytest.approx(sum(expected) / 2)
    assert std == pytest.approx(torch.tensor(expected, dtype=torch.float64).std().item())
    assert table["flat"][1.0] == (pytest.approx(linear_probe(x, y, *test).test_acc), 0.0)
    assert table["flat"][1.0][0] > table["flat"][0.05][0] - 0.05  # more labels do not hurt here
    with pytest.raises(ValueError, match="encoders is empty"):
        label_efficiency({}, (x, y), test)
    # From features already extracted: the same table.
    cached = label_efficiency_features(
        {"flat": (x, test[0])}, y, test[1], fractions=(0.05, 1.0), seeds=(0, 1)
    )
    assert cached == table
    with pytest.raises(ValueError, match="features is empty"):
        label_efficiency_features({}, y, test[1])


def test_probe_encoder_equals_probe_features_on_the_extracted_features() -> None:
    """The two entry points fit the same probe and k-NN: extracting first changes nothing."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
    x_tr, x_te = torch.randn(60, 3, 2, 2), torch.randn(30, 3, 2, 2)
    y_tr, y_te = torch.randint(0, 3, (60,)), torch.randint(0, 3, (30,))
    direct = probe_encoder(encoder, (x_tr, y_tr), (x_te, y_te), k=5)
    f_tr, f_te = extract_features(encoder, x_tr), extract_features(encoder, x_te)
    assert probe_features((f_tr, y_tr), (f_te, y_te), k=5) == direct
    assert direct["probe_acc"] == linear_probe(f_tr, y_tr, f_te, y_te).test_acc
    assert direct["knn_acc"] == knn_accuracy(f_tr, y_tr, f_te, y_te, k=5)
