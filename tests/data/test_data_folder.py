import warnings

import numpy as np
import pytest
from PIL import Image

from mimkit.data import (
    build_dataset,
    check_images,
    dataset_fingerprint,
    dataset_labels,
    num_classes,
    validate_data_spec,
)
from mimkit.errors import ConfigError, DataError, MimkitWarning


def _img(path, value=0, size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def _tree(root, counts=(("cat", 10), ("dog", 5)), split="train"):
    for c, n in dict(counts).items():
        for i in reversed(range(n)):  # created out of order on purpose
            _img(root / split / c / f"img_{i:03d}.png", value=i)
    return root


def test_folder_subset_fraction_and_count_sorted(tmp_path):
    root = _tree(tmp_path)
    ds = build_dataset(str(root), "train", subset=0.2)
    names = [p.split("/")[-2:] for p, _ in ds.samples]
    assert names == [["cat", "img_000.png"], ["cat", "img_001.png"], ["dog", "img_000.png"]]
    assert dataset_labels(ds) == [0, 0, 1] and num_classes(ds) == 2
    ds3 = build_dataset(f"folder:{root}", "train", subset=3)
    assert [p.split("/")[-1] for p, _ in ds3.samples] == [
        "img_000.png",
        "img_001.png",
        "img_002.png",
    ] * 2
    assert dataset_labels(ds3) == [0, 0, 0, 1, 1, 1]
    assert [s for s in build_dataset(root, "train", subset=3).samples] == ds3.samples
    full = build_dataset(root, "train")
    assert len(full) == 15
    assert full.samples == sorted(full.samples)
    img, y = full[11]
    assert img.mode == "RGB" and y == 1 and np.asarray(img)[0, 0, 0] == 1
    assert len(build_dataset(root, "train", subset=0.01)) == 2  # at least 1 per class


def test_folder_root_is_train_and_val_mapping(tmp_path):
    flat = tmp_path / "flat"
    for c in ("a", "b"):
        _img(flat / c / "x.jpg")
    assert len(build_dataset(flat, "train")) == 2
    with pytest.raises(DataError, match="has no val split"):
        validate_data_spec(str(flat), "val")
    root = _tree(tmp_path / "tv", {"a": 2, "b": 2, "c": 2})
    _img(root / "val" / "c" / "1.png")
    (root / "val" / "a").mkdir()
    val = build_dataset(root, "val")
    assert dataset_labels(val) == [2] and num_classes(val) == 3
    _img(root / "val" / "zzz" / "1.png")
    with pytest.raises(DataError, match="zzz"):
        build_dataset(root, "val")


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match=f"data path {tmp_path / 'x'} does not exist"):
        validate_data_spec(str(tmp_path / "x"))
    (tmp_path / "file.txt").write_text("hi")
    with pytest.raises(DataError, match="is not a directory"):
        build_dataset(str(tmp_path / "file.txt"), "train")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=f"folder {empty / 'train'} has no images"):
        validate_data_spec(str(empty))
    with pytest.raises(DataError, match="has no images"):
        build_dataset(str(empty), "train")
    with pytest.raises(DataError, match="has no val split"):
        validate_data_spec(str(empty), "val")
    nodata = tmp_path / "nodata"
    (nodata / "cat").mkdir(parents=True)
    (nodata / "dog").mkdir(parents=True)
    (nodata / "dog" / "notes.txt").write_text("x")
    for fn in (validate_data_spec, lambda s: build_dataset(s, "train")):
        with pytest.raises(DataError, match="has class folders but no image files"):
            fn(str(nodata))
    _img(nodata / "dog" / "a.png")
    with pytest.raises(DataError, match=f"class folder {nodata / 'cat'} has no images"):
        build_dataset(str(nodata), "train")
    loose = tmp_path / "loose"
    _img(loose / "a.png")
    with pytest.raises(DataError, match="no class folders"):
        build_dataset(str(loose), "train")
    with pytest.raises(ConfigError, match="on_bad_image"):
        build_dataset(str(nodata), "train", on_bad_image="ignore")


def test_corrupt_images(tmp_path):
    from mimkit.errors import MimkitWarning

    root = _tree(tmp_path, {"a": 3})
    bad = root / "train" / "a" / "img_001.jpg"
    bad.write_bytes(b"not a jpeg at all")
    ds = build_dataset(root, "train", on_bad_image="error")
    assert len(ds) == 4
    with pytest.raises(DataError, match=f"image {bad} cannot be read"):
        ds[1]
    with pytest.raises(DataError, match=f"image {bad} cannot be read .*on_bad_image=skip$"):
        check_images(ds)
    ds = build_dataset(root, "train")  # skip mode
    with pytest.warns(MimkitWarning, match=r"image .*img_001.jpg cannot be read .*: skipped"):
        img, _ = ds[1]
    assert np.asarray(img)[0, 0, 0] == 1  # the next file, img_001.png
    with pytest.warns(MimkitWarning, match=rf"skipping 1 unreadable image\(s\) of 4 in .*: {bad}$"):
        assert check_images(ds) == 1
    assert len(ds) == 3 and bad not in {p for p, _ in ds.samples}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_images(ds) == 0 and [x[1] for x in ds] == [0] * 3
    assert ds.num_bad == 1 and ds.bad_files == {str(bad)}
    # all unreadable: fails up front
    allbad = tmp_path / "allbad" / "c"
    allbad.mkdir(parents=True)
    (allbad / "x.jpg").write_bytes(b"")
    ds = build_dataset(tmp_path / "allbad", "train")
    with pytest.raises(DataError, match="none of its 1 images can be read"):
        check_images(ds)


def test_a_damaged_png_fails_the_header_check(tmp_path):
    """verify() walks a PNG's chunks: a file cut short is found before training."""
    root = _tree(tmp_path, {"a": 2})
    good = root / "train" / "a" / "img_000.png"
    cut = root / "train" / "a" / "img_001.png"
    cut.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(DataError, match=f"image {cut} cannot be read"):
        check_images(build_dataset(root, "train", on_bad_image="error"))


def test_folder_fingerprint(tmp_path):
    root = _tree(tmp_path / "d")
    fp = dataset_fingerprint(str(root), "train")
    assert fp == dataset_fingerprint(f"folder:{root}", "train")
    assert fp != dataset_fingerprint(str(root), "train", subset=2)
    moved = root.rename(tmp_path / "moved")
    assert dataset_fingerprint(str(moved), "train") == fp
    _img(moved / "train" / "dog" / "new.png")
    assert dataset_fingerprint(str(moved), "train") != fp


def test_a_symlink_loop_yields_each_image_once(tmp_path):
    from mimkit.errors import MimkitWarning

    root = _tree(tmp_path / "data", {"a": 13, "b": 10})  # 23 images, as in the issue
    (root / "train" / "a" / "loop").symlink_to(root / "train", target_is_directory=True)
    (root / "train" / "b" / "again").symlink_to(root / "train" / "b")  # a link to itself
    validate_data_spec(str(root), "train")
    with pytest.warns(MimkitWarning, match=r"2 folder\(s\) reached again .* read once only"):
        ds = build_dataset(str(root), "train")
    assert len(ds) == 23
    assert len({p for p, _ in ds.samples}) == 23
    assert dataset_labels(ds) == [0] * 13 + [1] * 10


def test_16_bit_grayscale_is_scaled_by_its_bit_depth(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "data" / "a" / "deep.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    img, _ = build_dataset(tmp_path / "data", "train")[0]
    arr = np.asarray(img)
    assert img.mode == "RGB" and (arr == 255).mean() < 0.01  # not clipped to white
    np.testing.assert_allclose(arr[..., 0], ramp / 257, atol=0.51)
    assert (arr[..., 0] == arr[..., 2]).all()


def _damage_png_stream(path):
    """Flip a byte of a PNG's compressed pixels and fix the chunk's CRC: every checksum PIL's
    verify() reads passes, but the pixels cannot be inflated."""
    import struct
    import zlib

    raw = bytearray(path.read_bytes())
    i = raw.index(b"IDAT")
    n = struct.unpack(">I", raw[i - 4 : i])[0]
    data = bytearray(raw[i + 4 : i + 4 + n])
    data[n // 2] ^= 0xFF
    raw[i + 4 : i + 4 + n] = data
    raw[i + 4 + n : i + 8 + n] = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(data)))
    path.write_bytes(bytes(raw))


def test_a_png_with_a_damaged_stream_fails_the_up_front_check(tmp_path):
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    for i in range(3):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "a" / f"{i}.png")
    bad = root / "a" / "1.png"
    _damage_png_stream(bad)
    with Image.open(bad) as img:
        img.verify()  # the checksums pass
    message = rf"image {bad} cannot be read \(OSError: damaged compressed"
    with pytest.raises(DataError, match=message):
        check_images(build_dataset(root, "train", on_bad_image="error"))
    ds = build_dataset(root, "train")
    with pytest.warns(MimkitWarning, match="skipping 1 unreadable image"):
        assert check_images(ds) == 1
    assert [p for p, _ in ds.samples] == [str(root / "a" / "0.png"), str(root / "a" / "2.png")]


def test_an_image_that_fails_only_when_decoded_is_not_skipped_silently(tmp_path):
    """The up-front check found one unreadable file; a JPEG cut short passes it (its header
    is whole) and fails while loading: that one is announced too."""
    root = _tree(tmp_path, {"a": 4})
    (root / "train" / "a" / "img_000.png").write_bytes(b"not an image")
    cut = root / "train" / "a" / "img_002.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:-600])
    (root / "train" / "a" / "img_002.png").unlink()
    ds = build_dataset(root, "train")
    with pytest.warns(MimkitWarning, match="skipping 1 unreadable"):
        check_images(ds)
    with pytest.warns(MimkitWarning, match=rf"image {cut} cannot be read .*: skipped"):
        ds[[p for p, _ in ds.samples].index(str(cut))]
    assert ds.num_bad == 2


def test_unreadable_images_leave_an_evaluation_set(tmp_path):
    from torch.utils.data import DataLoader

    from mimkit.data import collate_readable, leave_out_unreadable

    root = _tree(tmp_path, {"a": 3, "b": 3})
    cut = root / "train" / "b" / "img_001.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:-600])  # passes the header check, fails to decode
    ds = leave_out_unreadable(build_dataset(root, "train", np.array))
    with pytest.warns(MimkitWarning, match=rf"image {cut} cannot be read .*: left out"):
        batches = list(filter(None, DataLoader(ds, batch_size=4, collate_fn=collate_readable)))
    labels = [int(y) for _, ys in batches for y in ys]
    assert labels == [0, 0, 0, 1, 1, 1]  # 7 files, 6 readable: no substitute counted twice


def test_32_bit_float_images_are_scaled_from_their_range(tmp_path):
    unit = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    cases = {
        "unit.tif": (unit, unit * 255),  # floats in [0, 1]: the usual range
        "bytes.tif": (unit * 200, unit * 200),  # already 0-255
        "wide.tif": (unit * 4000, unit * 255),  # above 255: from [0, max]
    }
    for name, (values, _) in cases.items():
        path = tmp_path / "data" / "a" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(path)
        assert Image.open(path).mode == "F"
    ds = build_dataset(tmp_path / "data", "train")
    for i, (path, _) in enumerate(ds.samples):
        img, _ = ds[i]
        expected = cases[path.rsplit("/", 1)[-1]][1]
        assert img.mode == "RGB"
        np.testing.assert_allclose(np.asarray(img)[..., 0], expected, atol=0.51)
