import json

import pytest
import torch

from mimkit.cli import main
from mimkit.models import build_vit


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    m = build_vit("vit_nano", 16, 4)
    sd = {f"backbone.{k}": v for k, v in m.state_dict().items()}
    sd["head.last_layer.weight"] = torch.randn(32, 64)
    path = d / "checkpoint.pth"
    torch.save(
        {
            "student": sd,
            "teacher": sd,
            "optimizer": {},
            "epoch": 1,
            "step": 10,
            "config": {
                "model": {"arch": "vit_nano", "img_size": 16, "patch_size": 4},
                "data": {"dataset": "embedded"},
            },
        },
        path,
    )
    return path


SMALL = ["--subset", "20", "--val-subset", "10", "--device", "cpu", "--quiet"]


def test_knn_cli_writes_json_and_reuses_cache(ckpt, capsys):
    assert main(["knn", "--checkpoint", str(ckpt), *SMALL, "--ks", "5", "20"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "extracted" in out
    res = json.loads((ckpt.parent / "knn.json").read_text())
    assert res["num_train"] == 200 and res["num_val"] == 100
    assert set(res["results"]) == {"5", "20"} and "top5" in res["results"]["5"]
    assert len(list((ckpt.parent / "features").glob("*.safetensors"))) == 2
    other = ckpt.parent / "k2.json"
    argv = ["knn", "--checkpoint", str(ckpt), *SMALL, "--ks", "10", "--fewshot", "--draws", "2"]
    assert main([*argv, "--output", str(other)]) == 0
    assert "cached" in capsys.readouterr().out
    res2 = json.loads(other.read_text())
    assert set(res2["fewshot"]) == {"1", "5", "10", "20"}


def test_linear_cli(ckpt, capsys):
    out = ckpt.parent / "lin.json"
    argv = ["linear", "--checkpoint", str(ckpt), *SMALL, "--epochs", "3", "--batch-size", "64"]
    assert main([*argv, "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["feature_dim"] == 3 * 64 and len(res["history"]) == 3
    assert "optimistic" in capsys.readouterr().out
    argv += ["--augment", "--avgpool", "--epochs", "1", "--output", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["feature_dim"] == 4 * 64


def test_export_cli(ckpt, tmp_path):
    from mimkit.runs.paths import default_file_mode

    out = tmp_path / "b.safetensors"
    assert main(["export", str(ckpt), str(out)]) == 0
    assert out.is_file()
    assert out.stat().st_mode & 0o777 == default_file_mode()  # not safetensors' 0600
    assert main(["export", str(ckpt), str(out)]) == 2  # exists, no --force


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("folder.safetensors", "it is a folder"),
        ("file/b.safetensors", "file is a file, not a folder"),
    ],
)
def test_export_to_an_unwritable_place_is_one_line(ckpt, tmp_path, capsys, where, message):
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "file").write_text("a file")
    assert main(["export", str(ckpt), str(tmp_path / where), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(tmp_path) in err, err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--checkpoint", "/nonexistent/ck.pth"], "no such file"),
        (["--checkpoint-key", "ema"], "'ema' not found"),
        (["--data", "/nonexistent/data"], "does not exist"),
        (["--img-size", "32"], "interpolate"),
        (["--subset", "abc"], "--subset"),
    ],
)
def test_knn_cli_user_errors(ckpt, capsys, argv, msg):
    base = ["knn", "--checkpoint", str(ckpt), "--device", "cpu", "--quiet"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["knn", "linear"])
def test_weights_with_nan_are_refused_before_evaluating(ckpt, tmp_path, capsys, command):
    state = torch.load(ckpt, weights_only=True)
    state["teacher"] = {k: v * float("nan") for k, v in state["teacher"].items()}
    bad = tmp_path / "nan.pth"
    torch.save(state, bad)
    assert main([command, "--checkpoint", str(bad), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hold NaN or infinite values" in err, err


def test_knn_on_a_plain_idx_folder_says_what_it_recognised(ckpt, tmp_path, capsys):
    import numpy as np

    from mimkit.data.idx import write_idx

    data = tmp_path / "garments"
    data.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 20), ("t10k", 10)):
        write_idx(data / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(data / f"{part}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    out = tmp_path / "knn.json"
    argv = ["knn", "--checkpoint", str(ckpt), "--data", str(data), "--device", "cpu", "--quiet"]
    assert main([*argv, "--ks", "5", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    said = f"on {data} (Fashion-MNIST IDX files, recognised; or say fashion-mnist:{data})"
    assert said in printed


def _own_copy(ckpt, tmp_path):
    """The checkpoint in a folder of this test's own (its features are not cached yet)."""
    import shutil

    copy = tmp_path / "run" / "checkpoint.pth"
    copy.parent.mkdir()
    shutil.copy(ckpt, copy)
    return copy


def test_a_full_disk_costs_the_feature_cache_only(ckpt, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    import mimkit.evaluate.features

    def save_file_on_a_full_disk(tensors, filename, metadata=None):
        open(filename, "wb").close()  # created, then nothing fits
        message = "I/O error: No space left on device (os error 28)"
        raise SafetensorError(f"Error while serializing: {message}")

    monkeypatch.setattr(mimkit.evaluate.features, "save_file", save_file_on_a_full_disk)
    own = _own_copy(ckpt, tmp_path)
    assert main(["knn", "--checkpoint", str(own), *SMALL, "--ks", "20"]) == 0
    out, err = capsys.readouterr()
    assert "features extracted" in out and "top-1" in out
    assert json.loads((own.parent / "knn.json").read_text())["results"]["20"]["top1"] >= 0
    lines = err.strip().splitlines()
    assert len(lines) == 2, err  # the train and the val features
    for line in lines:
        cache = own.parent / "features"
        assert line.startswith(f"mimkit knn: warning: features not cached (cannot write {cache}/")
        assert line.endswith(".safetensors: disk full)")
    assert list((own.parent / "features").iterdir()) == []  # no temporary file left


@pytest.mark.parametrize(("command", "extra"), [("knn", []), ("linear", ["--epochs", "1"])])
def test_a_full_disk_while_writing_the_result_is_one_line(
    ckpt, tmp_path, capsys, full_disk, command, extra
):
    full_disk(f"{command}.json")
    own = _own_copy(ckpt, tmp_path)
    assert main([command, "--checkpoint", str(own), *SMALL, *extra]) == 2
    out, err = capsys.readouterr()
    assert "top-1" in out  # the result was printed before the write
    result = own.parent / f"{command}.json"
    assert err.strip() == f"mimkit {command}: error: cannot write {result}: disk full"
    assert sorted(p.name for p in own.parent.iterdir() if p.is_file()) == ["checkpoint.pth"]


def test_knn_prints_the_k_and_shots_it_used(ckpt, tmp_path, capsys):
    out = tmp_path / "knn.json"
    argv = ["knn", "--checkpoint", str(ckpt), "--subset", "2", "--val-subset", "5"]
    argv += ["--device", "cpu", "--quiet", "--ks", "10", "50", "200", "--output", str(out)]
    assert main([*argv, "--fewshot", "--shots", "1", "5", "--fewshot-k", "20"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "note: k 50, 200 more than the 20 train images: k=20 used" in printed
    table = printed[printed.index("    k   top-1   top-5") + 1 :][:2]
    assert [row.split()[0] for row in table] == ["10", "20"]
    assert (
        "note: 5 shots: more than the 2 images of the smallest class, which then gives all "
        "of them (the bank column)"
    ) in printed
    rows = printed[printed.index("shots  bank     k   top-1     std") + 1 :][:2]
    assert [row.split()[:3] for row in rows] == [["1", "10", "10"], ["5", "20", "20"]]
    saved = json.loads(out.read_text())
    assert set(saved["results"]) == {"10", "20"} and saved["fewshot"]["5"]["bank"] == 20
    assert any(note.startswith("k 50, 200 more than") for note in saved["notes"])


def test_the_online_knn_reports_the_k_it_used():
    from mimkit.data import EmbeddedFashionMNIST, eval_transform
    from mimkit.evaluate.online import online_knn

    tf = eval_transform(16, (0.5,), (0.5,))
    train = EmbeddedFashionMNIST("train", tf, subset=1)  # 10 images
    val = EmbeddedFashionMNIST("val", tf, subset=1)
    result = online_knn(build_vit("vit_nano", 16, 4), train, val, "cpu", k=20)
    assert result["k"] == 10


@pytest.mark.parametrize("command", ["knn", "linear", "finetune"])
def test_a_one_class_data_set_is_refused_in_one_line(ckpt, tmp_path, capsys, command):
    from PIL import Image

    data, out = tmp_path / "one", tmp_path / "out"
    for split in ("train", "val"):
        (data / split / "cat").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(data / split / "cat" / f"{i}.png")
    source = "--init" if command == "finetune" else "--checkpoint"
    where = "--output-dir" if command == "finetune" else "--output"
    argv = [command, source, str(ckpt), "--data", str(data), where, str(out), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mimkit {command}: error: the train split of {data} has only class 'cat': telling "
        "classes apart needs at least 2"
    )
    assert not out.exists()


def test_an_unreadable_val_image_leaves_the_knn_set(ckpt, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    data, rng = tmp_path / "photos", np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 3)):
        for c in ("a", "b"):
            (data / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20, 20, 3), np.uint8)
                Image.fromarray(pixels).save(data / split / c / f"{i}.jpg")
    cut = data / "val" / "a" / "0.jpg"
    cut.write_bytes(cut.read_bytes()[:-300])  # its header is whole: it fails when decoded
    argv = ["knn", "--checkpoint", str(ckpt), "--data", str(data), "--device", "cpu", "--quiet"]
    assert main([*argv, "--ks", "3", "--output", str(tmp_path / "knn.json")]) == 0
    out, err = capsys.readouterr()
    assert "8 train / 5 val" in out  # 6 val files, 5 readable
    assert err.strip().startswith(f"mimkit knn: warning: image {cut} cannot be read (OSError")
    assert err.strip().endswith("left out (later unreadable images are left out without a word)")
