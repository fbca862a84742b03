"""CelebA loader on a tiny fixture written in CelebA's layout by the test itself."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.multitask_vision.celeba import CELEBA_ATTRIBUTES, load_celeba
from moopt.tasks.multitask_vision.errors import DataLayoutError, UnknownTaskError


def test_fixture_loads_all_40_attributes(celeba_root):
    root, attrs = celeba_root
    ds = load_celeba(root, split="train", image_size=16)
    # Splits cycle train, train, valid, test over 12 images: 6 train images.
    assert len(ds) == 6
    assert ds.task_names == list(CELEBA_ATTRIBUTES) and len(ds.task_names) == 40
    image, labels = ds[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    # Item 0 of the train split is file 000001.jpg; labels are {-1, 1} mapped to {0, 1}.
    expect = (attrs[0] + 1) // 2
    assert [int(labels[a]) for a in CELEBA_ATTRIBUTES] == expect.tolist()


def test_split_selection_and_attribute_subset(celeba_root):
    root, attrs = celeba_root
    test = load_celeba(root, split="test", tasks=["Smiling", "Male"], image_size=8)
    assert len(test) == 3 and test.task_names == ["Smiling", "Male"]
    smiling = CELEBA_ATTRIBUTES.index("Smiling")
    # Test images are every 4th file starting at index 3.
    want = [(int(attrs[i, smiling]) + 1) // 2 for i in (3, 7, 11)]
    assert test.labels()["Smiling"].tolist() == want
    assert [int(test[i][1]["Smiling"]) for i in range(3)] == want


def test_unknown_attribute_is_named(celeba_root):
    root, _ = celeba_root
    with pytest.raises(UnknownTaskError, match="'Has_Tail'"):
        load_celeba(root, tasks=["Smiling", "Has_Tail"])


@pytest.mark.parametrize("missing", [
    "list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
    "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt",
])
def test_missing_text_file_is_named(celeba_root, missing):
    root, _ = celeba_root
    (root / "celeba" / missing).unlink()
    with pytest.raises(DataLayoutError, match=missing):
        load_celeba(root)


def test_missing_root_image_folder_and_image_are_named(tmp_path, celeba_root):
    root, _ = celeba_root
    with pytest.raises(DataLayoutError, match="nowhere"):
        load_celeba(tmp_path / "nowhere")
    (root / "celeba" / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(DataLayoutError, match="000005.jpg"):
        load_celeba(root)
    for f in (root / "celeba" / "img_align_celeba").iterdir():
        f.unlink()
    (root / "celeba" / "img_align_celeba").rmdir()
    with pytest.raises(DataLayoutError, match="img_align_celeba"):
        load_celeba(root)


def test_malformed_rows_name_file_and_line(celeba_root):
    root, _ = celeba_root
    path = root / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(" 1", " 2", 1) if " 1" in lines[4] else lines[4] + " 7"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataLayoutError, match=r"list_attr_celeba.txt:5"):
        load_celeba(root)


def test_unknown_split_is_named(celeba_root):
    root, _ = celeba_root
    with pytest.raises(ValueError, match="'validation'"):
        load_celeba(root, split="validation")
