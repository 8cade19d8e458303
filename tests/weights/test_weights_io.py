import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mimkit.errors import CheckpointError, ConfigError
from mimkit.models import build_vit
from mimkit.weights import (
    export_backbone,
    infer_vit_config,
    load_backbone,
    load_backbone_state,
    load_pretrained,
)


def _nano(seed=0):
    torch.manual_seed(seed)
    m = build_vit("vit_nano", 16, 4).eval()
    with torch.no_grad():
        m.masked_embed.normal_()
    return m


def _mimkit_ckpt(path, model):
    sd = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    head = {"head.mlp.0.weight": torch.randn(8, 64), "head.last_layer.weight": torch.randn(16, 8)}
    torch.save(
        {
            "student": {**sd, **head},
            "teacher": {**sd, **head},
            "optimizer": {"state": {}, "param_groups": []},
            "epoch": 3,
            "step": 30,
            "config": {
                "model": {"arch": "vit_nano", "img_size": 16, "patch_size": 4},
                "data": {"dataset": "embedded"},
            },
        },
        path,
    )
    return path


def test_mimkit_checkpoint_roundtrip(tmp_path):
    m = _nano()
    p = _mimkit_ckpt(tmp_path / "checkpoint.pth", m)
    sd, cfg = load_backbone_state(p)
    assert cfg["arch"] == "vit_nano"
    assert set(sd) == set(m.state_dict())
    model, cfg2, notes = load_pretrained(p)
    assert notes == []
    assert (cfg2.embed_dim, cfg2.depth, cfg2.num_heads) == (64, 3, 2)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model.eval()(x).patches, m(x).patches)


def test_dino_layout_with_module_prefix_and_heads(tmp_path):
    m = _nano()
    sd = {f"module.backbone.{k}": v for k, v in m.state_dict().items() if k != "masked_embed"}
    sd["module.head.mlp.0.weight"] = torch.randn(4, 64)
    sd["module.head.last_layer.weight_g"] = torch.randn(16, 1)
    p = tmp_path / "dino.pth"
    torch.save({"teacher": sd, "student": sd, "epoch": 100}, p)
    state, cfg = load_backbone_state(p, "teacher")
    assert cfg is None
    assert not any(k.startswith(("head", "module", "backbone")) for k in state)
    inferred = infer_vit_config(state)
    assert inferred["embed_dim"] == 64 and inferred["depth"] == 3
    assert inferred["patch_size"] == 4 and inferred["img_size"] == 16
    assert inferred["num_heads"] == 2
    model = build_vit("vit_nano", 16, 4)
    notes = load_backbone(p, model, "teacher")
    assert any("masked_embed" in n and "zeros" in n for n in notes)
    assert torch.count_nonzero(model.masked_embed) == 0
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model.eval()(x).pooled, m(x).pooled)
    with pytest.raises(CheckpointError, match="'foo' not found"):
        load_backbone_state(p, "foo")


def test_plain_state_dict_with_classifier_head(tmp_path):
    m = _nano()
    sd = {k: v for k, v in m.state_dict().items() if k != "masked_embed"}
    sd["head.weight"], sd["head.bias"] = torch.randn(10, 64), torch.zeros(10)
    p = tmp_path / "plain.pt"
    torch.save(sd, p)
    model, cfg, notes = load_pretrained(p)
    assert cfg.arch == "vit_nano" and len(notes) == 1


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.pop("blocks.1.attn.qkv.weight"), "missing key 'blocks.1.attn.qkv.weight'"),
        (
            lambda sd: sd.__setitem__("blocks.0.extra", torch.zeros(1)),
            "unexpected key 'blocks.0.extra'",
        ),
        (
            lambda sd: sd.__setitem__("norm.weight", torch.ones(32)),
            r"shape mismatch for 'norm.weight'",
        ),
        (
            lambda sd: sd.__setitem__("pos_embed", torch.zeros(1, 65, 64)),
            "pos_embed is for a 8x8 grid",
        ),
    ],
)
def test_refuses_mismatched_files(tmp_path, edit, match):
    sd = dict(_nano().state_dict())
    edit(sd)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match=match):
        load_backbone(p, build_vit("vit_nano", 16, 4))


def test_pos_embed_interpolation_only_on_request(tmp_path):
    m = _nano()
    p = tmp_path / "w.pth"
    torch.save(m.state_dict(), p)
    big = build_vit("vit_nano", 32, 4)
    with pytest.raises(CheckpointError, match="interpolate"):
        load_backbone(p, big)
    notes = load_backbone(p, big, interpolate_pos_embed=True)
    assert big.pos_embed.shape == (1, 65, 64) and any("pos_embed" in n for n in notes)


def test_refuses_unreadable_and_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_backbone_state(tmp_path / "nope.pth")
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        load_backbone_state(bad)


def test_export_loads_strictly_into_timm_with_same_cls(tmp_path):
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    m = _nano()
    ckpt = _mimkit_ckpt(tmp_path / "checkpoint.pth", m)
    out = tmp_path / "backbone.safetensors"
    cfg = export_backbone(ckpt, out)
    tensors = load_file(str(out))
    assert "masked_embed" not in tensors
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["arch"] == "vit_nano" and meta["embed_dim"] == "64" and meta["depth"] == "3"
    tv = timm_vit.VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        num_classes=0,
    ).eval()
    tv.load_state_dict(tensors, strict=True)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ours = m(x).pooled
        theirs = tv(x)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # mimkit rebuilds the model from the export alone.
    model, cfg2, notes = load_pretrained(out)
    assert cfg2.arch == "vit_nano" and any("masked_embed" in n for n in notes)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).pooled, ours, atol=1e-6)


def test_safetensors_without_metadata_infers_config(tmp_path):
    m = _nano()
    p = tmp_path / "raw.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(p))
    model, cfg, notes = load_pretrained(p)
    assert cfg.arch == "vit_nano" and notes == []
    torch.save({k: v for k, v in m.state_dict().items()}, tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="heads"):
        sd = {k: v for k, v in m.state_dict().items()}
        sd["cls_token"] = torch.zeros(1, 1, 60)
        torch.save(sd, tmp_path / "odd.pth")
        load_pretrained(tmp_path / "odd.pth")


def test_python_objects_are_refused_in_one_line_with_a_way_out(tmp_path):
    import argparse

    p = tmp_path / "dino.pth"  # DINO's checkpoints hold their argparse options
    torch.save({"args": argparse.Namespace(lr=0.1), "teacher": _nano().state_dict()}, p)
    with pytest.raises(CheckpointError) as info:
        load_backbone_state(p)
    msg = str(info.value)
    assert "\n" not in msg and "weights_only=False`" not in msg
    assert "holds Python objects (such as argparse.Namespace) that mimkit will not unpickle" in msg
    assert "keep its tensors with python -c" in msg and "mimkit export" in msg


def test_weights_with_nan_are_refused(tmp_path):
    sd = dict(_nano().state_dict())
    sd["blocks.1.mlp.fc1.weight"] = sd["blocks.1.mlp.fc1.weight"].clone()
    sd["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"1 of \d+ backbone tensors hold NaN .*blocks.1"):
        load_backbone_state(tmp_path / "w.pth")


# A text file and damaged bytes that make torch's unpickler fail in other ways than the
# ones it names (KeyError, IndexError, an OSError from a seek past the end).
TEXT_AND_DAMAGE = {"hello.pth": b"hello\n", "a.pth": b"a", "cut.pth": None}


def _weights_files(tmp_path):
    model = build_vit("vit_nano", 16, 4)
    whole = tmp_path / "whole.pth"
    torch.save(model.state_dict(), whole)
    files = []
    for name, data in TEXT_AND_DAMAGE.items():
        path = tmp_path / name
        path.write_bytes(data if data is not None else whole.read_bytes()[:5000])
        files.append(path)
    return files


def test_text_and_damaged_weights_are_refused(tmp_path):
    for path in _weights_files(tmp_path):
        with pytest.raises(CheckpointError, match=f"^{path} is not a readable PyTorch file"):
            load_backbone_state(path)


@pytest.mark.parametrize(
    "argv",
    [
        ["knn", "--checkpoint", "{w}", "--output", "{out}/knn.json"],
        ["linear", "--checkpoint", "{w}", "--output", "{out}/linear.json"],
        ["masks", "--checkpoint", "{w}", "--output-dir", "{out}"],
        ["export", "{w}", "{out}/w.safetensors"],
        ["finetune", "--init", "{w}", "--output-dir", "{out}"],
        ["pretrain", "--init", "{w}", "--output-dir", "{out}"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_command_that_reads_weights_refuses_them_in_one_line(tmp_path, capsys, argv):
    from mimkit.cli import main

    out = tmp_path / "out"
    for path in _weights_files(tmp_path):
        assert main([a.format(w=path, out=out) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"mimkit {argv[0]}: error: {path} is not a readable PyTorch file " + (
            "(truncated, damaged, or not saved by torch.save)"
        )
        # (A refused pretraining run still leaves its lock file: issue 19, item 16.)
        assert not [p for p in out.rglob("*") if p.name != ".mimkit.lock"]
