"""Readers: layout detection and listing for ILSVRC, Tiny ImageNet and Imagenette, from
folders and from .zip / .tgz / .tar archives the tests build themselves with Pillow.

The builders here (``layout``, ``materialise``, ``image_bytes``) are reused by the other
test_data_* files.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyalex.data.readers import (
    DataError,
    TarContainer,
    open_container,
    open_source,
    parse_label_lines,
)
from tinyalex.data.subsets import IMAGENETTE_WNIDS, resolve_subset, shipped_list

CLASSES = ["n01440764", "n01443537", "n01484850"]  # tench, goldfish, great white shark


def image_bytes(w=8, h=6, color=(200, 30, 40), fmt="JPEG", mode="RGB") -> bytes:
    """A few-pixel image file in memory."""
    img = Image.new(mode, (w, h), color if mode != "RGB" or isinstance(color, tuple) else color)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def color_of(label: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 200 - 60 * label, 30 + 50 * label)


def layout(kind: str, classes=CLASSES, n_train=2, n_val=2, top="") -> dict[str, bytes]:
    """{relative path: bytes} of a small dataset. Each class has its own flat colour.

    kind: ilsvrc (val in class folders), ilsvrc-flat-txt ("file wnid" label file),
    ilsvrc-flat-csv (LOC_val_solution.csv style), ilsvrc-flat-int (Caffe val.txt, indices),
    tiny (official Tiny ImageNet), imagenette.
    """
    files: dict[str, bytes] = {}
    if kind == "imagenette":
        classes = list(IMAGENETTE_WNIDS)
    for c, wnid in enumerate(classes):
        for k in range(n_train):
            img = image_bytes(10 + k, 8, color_of(c % 3))
            if kind == "tiny":
                files[f"{top}train/{wnid}/images/{wnid}_{k}.JPEG"] = img
            else:
                files[f"{top}train/{wnid}/{wnid}_{k}.JPEG"] = img
        if kind == "tiny":
            files[f"{top}train/{wnid}/{wnid}_boxes.txt"] = b"box\n"
    val_lines = []
    for c, wnid in enumerate(classes):
        for k in range(n_val):
            img = image_bytes(9, 12, color_of(c % 3))
            name = f"val_{c}_{k}.JPEG"
            if kind in ("ilsvrc", "imagenette"):
                files[f"{top}val/{wnid}/{name}"] = img
            elif kind == "tiny":
                files[f"{top}val/images/{name}"] = img
                val_lines.append(f"{name}\t{wnid}\t0\t0\t8\t8")
            else:
                files[f"{top}val/{name}"] = img
                if kind == "ilsvrc-flat-txt":
                    val_lines.append(f"{name} {wnid}")
                elif kind == "ilsvrc-flat-csv":
                    val_lines.append(f"{Path(name).stem},{wnid} 1 2 3 4 {wnid} 5 6 7 8")
                elif kind == "ilsvrc-flat-int":
                    from tinyalex.data.subsets import imagenet_classes
                    val_lines.append(f"{name} {imagenet_classes()[wnid][0]}")
    if kind == "tiny":
        files[f"{top}wnids.txt"] = "\n".join(classes).encode()
        files[f"{top}words.txt"] = "\n".join(f"{w}\tthing {w}" for w in classes).encode()
        files[f"{top}val/val_annotations.txt"] = "\n".join(val_lines).encode()
    elif kind == "ilsvrc-flat-txt":
        files[f"{top}val_labels.txt"] = "\n".join(val_lines).encode()
    elif kind == "ilsvrc-flat-csv":
        files[f"{top}LOC_val_solution.csv"] = ("ImageId,PredictionString\n"
                                               + "\n".join(val_lines)).encode()
    elif kind == "ilsvrc-flat-int":
        files[f"{top}val/val.txt"] = "\n".join(val_lines).encode()
    return files


def materialise(files: dict[str, bytes], dest: Path, container: str) -> Path:
    """Write the files as a folder, .zip, .tgz or .tar at dest (+ extension)."""
    if container == "folder":
        for name, data in files.items():
            p = dest / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return dest
    if container == "zip":
        path = dest.with_name(dest.name + ".zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return path
    ext, mode = {"tgz": (".tgz", "w:gz"), "tar": (".tar", "w")}[container]
    path = dest.with_name(dest.name + ext)
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


EXPECTED_KIND = {"ilsvrc": "ilsvrc", "ilsvrc-flat-txt": "ilsvrc", "ilsvrc-flat-csv": "ilsvrc",
                 "ilsvrc-flat-int": "ilsvrc", "tiny": "tiny-imagenet", "imagenette": "imagenette"}


@pytest.mark.parametrize("container", ["folder", "zip", "tgz", "tar"])
@pytest.mark.parametrize("kind", list(EXPECTED_KIND))
def test_detect_and_list_every_layout_in_every_container(tmp_path, kind, container):
    """Each layout is recognised from its structure in a folder and in each archive type, with
    a top folder, and lists every train/val file with its class; a label file in any of the
    documented forms labels a flat ILSVRC val folder. Reading an item gives its bytes."""
    files = layout(kind, top="top-dir/")
    path = materialise(files, tmp_path / "ds", container)
    src = open_source(path)
    try:
        assert src.kind == EXPECTED_KIND[kind]
        assert src.root == "top-dir/"
        n_classes = 10 if kind == "imagenette" else 3
        assert len(src.classes) == n_classes
        assert len(src.items("train")) == 2 * n_classes
        assert len(src.items("val")) == 2 * n_classes
        assert src.problems == []
        for name, wnid in src.items("train"):
            assert f"/{wnid}/" in name
        # flat val labels really are the right class: val_<c>_<k> belongs to class c
        if kind.startswith("ilsvrc-flat") or kind == "tiny":
            for name, wnid in src.items("val"):
                c = int(Path(name).stem.split("_")[1])
                assert wnid == CLASSES[c]
            assert src.label_file is not None
        name = src.items("train")[0][0]
        assert src.read(name) == files[name]
        got = dict(src.iter_read([n for n, _ in src.items("train")]))
        assert all(got[n] == files[n] for n, _ in src.items("train"))
    finally:
        src.close()


def test_detection_is_by_structure_not_by_name(tmp_path):
    """A zip named like Imagenette holding a Tiny ImageNet layout, with a wrong extension, is
    read as Tiny ImageNet: the content decides, not the file name."""
    path = materialise(layout("tiny", top="imagenette2/"), tmp_path / "imagenette2", "zip")
    renamed = path.rename(tmp_path / "imagenette2.tgz")
    src = open_source(renamed)
    assert src.kind == "tiny-imagenet"
    assert src.class_name("n01440764") == "tench"  # names from the ILSVRC-1k list


def test_layout_without_top_folder(tmp_path):
    """Archives without a top folder (root = '') work too."""
    src = open_source(materialise(layout("ilsvrc"), tmp_path / "flat", "tgz"))
    assert src.root == "" and src.kind == "ilsvrc" and len(src.items("train")) == 6


def test_unrecognised_layout_is_a_data_error_that_lists_the_layouts(tmp_path):
    """A folder/archive with no known structure, a non-archive file and a missing path all raise
    DataError that says what was expected, never a traceback from deep inside."""
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="Tiny ImageNet"):
        open_source(tmp_path / "junk")
    (tmp_path / "notes.tgz").write_text("not an archive")
    with pytest.raises(DataError, match="not a folder, .zip or .tar"):
        open_source(tmp_path / "notes.tgz")
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "missing.zip")
    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        open_source(tmp_path / "empty.zip")


def test_official_ilsvrc_train_tar_of_tars_gets_a_hint(tmp_path):
    """The official ILSVRC train archive is a tar of per-class tars: the error says how to
    extract it rather than just 'unknown layout'."""
    inner = {f"{w}.tar": b"x" * 10 for w in CLASSES}
    path = materialise(inner, tmp_path / "ILSVRC2012_img_train", "tar")
    with pytest.raises(DataError, match="extract each <wnid>.tar into train/<wnid>/"):
        open_source(path)


def test_flat_val_without_label_file_is_reported(tmp_path):
    """Flat ILSVRC val images with no label file: val is empty and the reason is reported."""
    files = {k: v for k, v in layout("ilsvrc-flat-txt").items() if not k.endswith(".txt")}
    src = open_source(materialise(files, tmp_path / "d", "folder"))
    assert src.items("val") == []
    assert any("no label file" in why for _, why in src.problems)


def test_label_lines_formats():
    """Label lines: 'file wnid', 'file,wnid box...', tab separated, integer indices of the
    standard ILSVRC order, a CSV header ignored."""
    text = ("ImageId,PredictionString\n"
            "ILSVRC2012_val_00000001,n01751748 1 2 3 4\n"
            "b.JPEG n01440764\n"
            "c.JPEG\tn01443537\t0\t0\t1\t1\n"
            "d.JPEG 0\n"
            "\n")
    assert parse_label_lines(text) == [("ILSVRC2012_val_00000001", "n01751748"),
                                       ("b.JPEG", "n01440764"), ("c.JPEG", "n01443537"),
                                       ("d.JPEG", "n01440764")]


def test_label_file_problems_are_reported(tmp_path):
    """A label line for a file that is not there, and a val image with no label line, are
    reported in Source.problems (not fatal); labelled files are kept."""
    files = layout("ilsvrc-flat-txt")
    files["val_labels.txt"] += b"\nghost.JPEG n01440764\n"
    files["val/unlabelled.JPEG"] = image_bytes()
    src = open_source(materialise(files, tmp_path / "d", "zip"))
    whys = dict(src.problems)
    assert "label for a file that is not there" in whys["val_labels.txt: ghost.JPEG"]
    assert whys["val/unlabelled.JPEG"] == "val image without a label"
    assert len(src.items("val")) == 6


def test_tar_streams_and_reports_missing_members(tmp_path):
    """A .tgz is streamed once (archive order); a wanted name that is not in it comes back as
    an error value, not an exception."""
    path = materialise(layout("ilsvrc"), tmp_path / "d", "tgz")
    cont = open_container(path)
    assert isinstance(cont, TarContainer)
    names = cont.names()[:3] + ["nope.JPEG"]
    got = dict(cont.iter_read(names))
    assert isinstance(got["nope.JPEG"], FileNotFoundError)
    assert all(isinstance(got[n], bytes) for n in names[:3])


def test_truncated_archive_reports_unread_members(tmp_path):
    """A .tgz cut short: members after the cut are reported as unreadable, no crash."""
    files = layout("ilsvrc", n_train=20)
    for k in range(20):  # incompressible payload so the cut really loses members
        files[f"train/n01440764/noise_{k}.JPEG"] = np.random.default_rng(k).bytes(4000)
    path = materialise(files, tmp_path / "d", "tgz")
    cont = open_container(path)
    names = cont.names()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got = dict(cont.iter_read(names))
    assert len(got) == len(names)
    errors = [n for n, v in got.items() if isinstance(v, Exception)]
    assert 0 < len(errors) < len(names)


# ---------------------------------------------------------------- the real files

def test_real_tiny_imagenet_100_zip(real_data):
    """The shipped tiny-imagenet-100.zip: Tiny ImageNet layout, 100 classes with 500 train and
    50 val images each, and its '100-class' subset is exactly lists/tiny-imagenet-100.txt."""
    src = open_source(real_data / "tiny-imagenet-100.zip")
    try:
        assert src.kind == "tiny-imagenet"
        assert len(src.classes) == 100
        train = np.unique([w for _, w in src.items("train")], return_counts=True)
        val = np.unique([w for _, w in src.items("val")], return_counts=True)
        assert set(train[1]) == {500} and set(val[1]) == {50}
        assert src.problems == []
        wnids = resolve_subset(src.kind, src.classes, "100-class")
        assert wnids == sorted(shipped_list("tiny-imagenet-100.txt"))
        img = Image.open(io.BytesIO(src.read(src.items("val")[0][0])))
        assert img.size == (64, 64)
    finally:
        src.close()


def test_real_imagenette_tgz(real_data):
    """The shipped imagenette2-224.tgz: Imagenette, 10 classes, 500 train / 300 val each;
    '100-class' is a clear DataError naming its classes; 'all' gives the 10."""
    src = open_source(real_data / "imagenette2-224.tgz")
    try:
        assert src.kind == "imagenette"
        assert src.classes == sorted(IMAGENETTE_WNIDS)
        assert len(src.items("train")) == 5000 and len(src.items("val")) == 3000
        with pytest.raises(DataError, match=r"Imagenette has 10 classes \(n01440764 tench"):
            resolve_subset(src.kind, src.classes, "100-class")
        assert resolve_subset(src.kind, src.classes, "all") == sorted(IMAGENETTE_WNIDS)
    finally:
        src.close()
