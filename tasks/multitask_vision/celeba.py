"""CelebA's 40 binary face attributes as 40 tasks, read from a local torchvision root.

Layout (what ``torchvision.datasets.CelebA`` reads; nothing is downloaded at run time)::

    ROOT/celeba/img_align_celeba/000001.jpg ...
    ROOT/celeba/list_attr_celeba.txt            count, header of 40 names, rows of -1/1
    ROOT/celeba/list_eval_partition.txt         "000001.jpg 0" (0 train, 1 valid, 2 test)
    ROOT/celeba/identity_CelebA.txt
    ROOT/celeba/list_bbox_celeba.txt
    ROOT/celeba/list_landmarks_align_celeba.txt

torchvision checks the official MD5 sums of the text files; :func:`load_celeba` instead
checks the layout itself (naming the first missing file, and the file and line of a
malformed row) and skips the MD5 check unless ``verify_md5=True``, so that a subset or a
test fixture in the same layout loads too.

Example (needs a CelebA root, so not run here):
    >>> from moopt.tasks.multitask_vision.celeba import load_celeba  # doctest: +SKIP
    >>> ds = load_celeba("~/data", split="valid", tasks=["Smiling", "Male"])  # doctest: +SKIP
    >>> image, labels = ds[0]  # doctest: +SKIP

    ``image`` is ``[3, 64, 64]`` in [0, 1]; ``labels`` is ``{"Smiling": 0 or 1, "Male": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from moopt.tasks.multitask_vision.dataset import check_task_names
from moopt.tasks.multitask_vision.errors import DataLayoutError, missing_vision_extra
from torch import Tensor
from torch.utils.data import Dataset

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
CELEBA_TEXT_FILES = (
    "list_attr_celeba.txt",
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
CELEBA_IMAGE_DIR = "img_align_celeba"
SPLITS = {"train": 0, "valid": 1, "test": 2, "all": None}


def check_celeba_root(root: str | Path) -> Path:
    """The ``ROOT/celeba`` folder; raises ``DataLayoutError`` naming the first missing part."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataLayoutError(f"CelebA data root {str(root)!r} does not exist or is not a folder")
    base = root / "celeba"
    if not base.is_dir():
        raise DataLayoutError(
            f"CelebA data root {str(root)!r} lacks the folder {str(base)!r} "
            "(torchvision layout: ROOT/celeba/...)"
        )
    for name in CELEBA_TEXT_FILES:
        if not (base / name).is_file():
            raise DataLayoutError(f"CelebA data root {str(root)!r} lacks {str(base / name)!r}")
    if not (base / CELEBA_IMAGE_DIR).is_dir():
        raise DataLayoutError(
            f"CelebA data root {str(root)!r} lacks the image folder "
            f"{str(base / CELEBA_IMAGE_DIR)!r}"
        )
    return base


def read_attribute_table(base: Path) -> tuple[list[str], list[str]]:
    """Attribute names and image file names of ``list_attr_celeba.txt``, checking each row."""
    path = base / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise DataLayoutError(f"{path}:1: expected a count line and a header line of names")
    names = lines[1].split()
    if not names:
        raise DataLayoutError(f"{path}:2: the header line names no attributes")
    files = []
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != len(names) + 1:
            raise DataLayoutError(
                f"{path}:{lineno}: expected an image name and {len(names)} values, "
                f"got {len(fields)} fields"
            )
        bad = [v for v in fields[1:] if v not in ("1", "-1")]
        if bad:
            raise DataLayoutError(
                f"{path}:{lineno}: attribute values must be 1 or -1, got {bad[0]!r}"
            )
        files.append(fields[0])
    return names, files


def check_partition(base: Path, attr_files: Sequence[str]) -> None:
    """``list_eval_partition.txt`` must list the same images with split ids 0, 1 or 2."""
    path = base / "list_eval_partition.txt"
    listed = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataLayoutError(f"{path}:{lineno}: expected 'IMAGE SPLIT' with SPLIT 0, 1 or 2")
        listed.append(fields[0])
    if listed != list(attr_files):
        missing = sorted(set(attr_files) ^ set(listed))
        where = missing[0] if missing else "(order differs)"
        raise DataLayoutError(
            f"{path}: lists other images than list_attr_celeba.txt, e.g. {where!r}"
        )


def _torchvision_celeba(verify_md5: bool) -> type:
    try:
        from torchvision.datasets import CelebA
    except ImportError as err:
        raise missing_vision_extra("torchvision") from err

    class LocalCelebA(CelebA):
        """torchvision's CelebA with the layout checked by us; MD5s only on request."""

        def _check_integrity(self) -> bool:
            return super()._check_integrity() if verify_md5 else True

    return LocalCelebA


class CelebAMultiTask(Dataset):
    """Items ``(image [3, S, S] in [0, 1], {attribute: 0/1})`` for the chosen attributes."""

    def __init__(self, base: Dataset, attr_names: Sequence[str], tasks: Sequence[str]) -> None:
        self.base = base
        self.tasks = list(tasks)
        self.num_classes = {t: 2 for t in self.tasks}
        columns = [list(attr_names).index(t) for t in self.tasks]
        self.columns = torch.tensor(columns, dtype=torch.long)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, attrs = self.base[index]
        chosen = attrs[self.columns].long()
        return image, {t: chosen[i] for i, t in enumerate(self.tasks)}

    def labels(self) -> dict[str, Tensor]:
        """All labels without decoding images (for class balance, baselines)."""
        table = self.base.attr[:, self.columns].long()
        return {t: table[:, i] for i, t in enumerate(self.tasks)}


def load_celeba(
    root: str | Path,
    split: str = "train",
    *,
    tasks: Sequence[str] | None = None,
    image_size: int = 64,
    verify_md5: bool = False,
) -> CelebAMultiTask:
    """CelebA ``split`` (train, valid, test, all) from ``root`` with the chosen attributes."""
    if split not in SPLITS:
        raise ValueError(f"unknown CelebA split {split!r}; known: {sorted(SPLITS)}")
    base_dir = check_celeba_root(root)
    names, files = read_attribute_table(base_dir)
    check_partition(base_dir, files)
    chosen = list(names) if tasks is None else list(tasks)
    check_task_names(chosen, names, "CelebA")
    for name in files:
        if not (base_dir / CELEBA_IMAGE_DIR / name).is_file():
            raise DataLayoutError(
                f"CelebA data root {str(root)!r} lacks the image "
                f"{str(base_dir / CELEBA_IMAGE_DIR / name)!r} listed in list_attr_celeba.txt"
            )
    from torchvision import transforms

    transform = transforms.Compose(
        [transforms.Resize((image_size, image_size)), transforms.ToTensor()]
    )
    cls = _torchvision_celeba(verify_md5)
    base = cls(str(Path(root).expanduser()), split=split, target_type="attr", transform=transform)
    return CelebAMultiTask(base, base.attr_names, chosen)
