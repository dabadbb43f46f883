"""Subsets: '100-class', 'all' and wnid files; class names; the impossible-subset errors."""

from __future__ import annotations

import pytest

from tinyalex.data.errors import DataError
from tinyalex.data.subsets import (
    IMAGENETTE_WNIDS,
    class_name,
    imagenet_classes,
    read_subset_file,
    resolve_subset,
    shipped_list,
    subset_tag,
)


def test_shipped_lists_are_sane():
    """Both 100-class lists have 100 distinct wnids, all in the ILSVRC-1k list, which has 1000
    classes in the standard order (0 = n01440764 tench)."""
    k = imagenet_classes()
    assert len(k) == 1000 and k["n01440764"] == (0, "tench")
    for name in ("imagenet-100.txt", "tiny-imagenet-100.txt"):
        wnids = shipped_list(name)
        assert len(wnids) == len(set(wnids)) == 100
        assert set(wnids) <= set(k)
    assert set(IMAGENETTE_WNIDS) <= set(k)


def test_100_class_on_ilsvrc_is_the_cmc_list_sorted():
    """On ILSVRC, '100-class' = the CMC ImageNet-100 list, labels in sorted wnid order, even
    when the dataset has all 1000 classes."""
    wnids = resolve_subset("ilsvrc", list(imagenet_classes()), "100-class")
    assert wnids == sorted(shipped_list("imagenet-100.txt"))


def test_100_class_on_tiny_is_the_tiny_100_list():
    """On Tiny ImageNet (200 classes), '100-class' = lists/tiny-imagenet-100.txt."""
    available = list(shipped_list("tiny-imagenet-100.txt")) + ["n09999999"]
    assert resolve_subset("tiny-imagenet", available, "100-class") == \
        sorted(shipped_list("tiny-imagenet-100.txt"))


def test_100_class_on_imagenette_is_a_clear_error():
    """Imagenette cannot give 100 classes: the error names its 10 classes and the way out."""
    with pytest.raises(DataError) as err:
        resolve_subset("imagenette", IMAGENETTE_WNIDS, "100-class")
    msg = str(err.value)
    assert msg.startswith("Imagenette has 10 classes (n01440764 tench, ")
    assert "n03888257 parachute" in msg and "use --subset all" in msg


def test_missing_classes_name_what_is_missing():
    """An ILSVRC folder with only some ImageNet-100 classes: DataError with counts and the
    first missing wnids."""
    have = list(shipped_list("imagenet-100.txt"))[:37]
    with pytest.raises(DataError, match=r"has 37 classes .* lacks 63 of the 100 classes"):
        resolve_subset("ilsvrc", have, "100-class")


def test_all_is_every_class_sorted():
    """'all' = every class present, sorted (so the full ILSVRC gets the standard index)."""
    assert resolve_subset("imagenette", list(reversed(IMAGENETTE_WNIDS)), "all") == \
        sorted(IMAGENETTE_WNIDS)
    full = resolve_subset("ilsvrc", list(imagenet_classes()), "all")
    assert [imagenet_classes()[w][0] for w in full] == list(range(1000))


def test_subset_file(tmp_path):
    """A file of wnids: comments, blank lines, trailing text and duplicates are handled; the
    result is sorted; a class the dataset lacks is an error; junk lines are errors."""
    f = tmp_path / "mine.txt"
    f.write_text("# my classes\nn01443537 goldfish\n\nn01440764\nn01443537\n")
    assert read_subset_file(f) == ["n01443537", "n01440764"]
    assert resolve_subset("ilsvrc", ["n01440764", "n01443537", "n01484850"], str(f)) == \
        ["n01440764", "n01443537"]
    with pytest.raises(DataError, match="lacks 1 of the 2"):
        resolve_subset("ilsvrc", ["n01440764"], str(f))
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764\ngoldfish\n")
    with pytest.raises(DataError, match="line 2"):
        read_subset_file(bad)
    with pytest.raises(DataError, match="100-class, all or a file"):
        resolve_subset("ilsvrc", ["n01440764"], str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="no wnids"):
        read_subset_file(tmp_path / "empty.txt")


def test_names_and_tags():
    """Names come from the 1k list, then the dataset's words.txt, then the wnid; tags are
    short and filesystem safe."""
    assert class_name("n01443537") == "goldfish"
    assert class_name("n00000001", {"n00000001": "thing, stuff"}) == "thing"
    assert class_name("n00000002") == "n00000002"
    assert subset_tag("100-class") == "100class"
    assert subset_tag("all") == "all"
    assert subset_tag("/x/my list (v2).txt") == "list-my_list_v2_"
