"""Data sources as one registry: every kind is parsed, checked, built, fingerprinted and
normalised from its one record, so a new kind is one entry."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from mimkit.data import (
    build_dataset,
    dataset_fingerprint,
    default_normalization,
    parse_data_spec,
    validate_data_spec,
)
from mimkit.data.build import SOURCES, DataSource
from mimkit.errors import DataError


@pytest.mark.parametrize("kind", [k for k in SOURCES if k not in ("embedded", "folder")])
def test_every_kind_is_parsed_and_refuses_a_missing_folder(kind, tmp_path):
    assert parse_data_spec(f"{kind.upper()}:{tmp_path}") == (kind, tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        validate_data_spec(f"{kind}:{tmp_path / 'nope'}")
    assert default_normalization(f"{kind}:{tmp_path}") == SOURCES[kind].normalization


def test_a_new_kind_is_one_entry(monkeypatch, tmp_path):
    (tmp_path / "a.bin").write_bytes(b"12345")

    def files(path, split):
        f = path / ("a.bin" if split == "train" else "b.bin")
        if not f.is_file():
            raise DataError(f"{f} is missing")
        return [f]

    def build(path, split, transform, subset, on_bad_image):
        return TensorDataset(torch.zeros(3, 1), torch.arange(3))

    stats = ((0.5,), (0.25,))
    monkeypatch.setitem(SOURCES, "toy", DataSource(build, files, normalization=stats))
    spec = f"toy:{tmp_path}"
    assert parse_data_spec(spec) == ("toy", tmp_path)
    assert len(build_dataset(spec)) == 3
    assert default_normalization(spec) == stats
    first = dataset_fingerprint(spec)
    (tmp_path / "a.bin").write_bytes(b"123456")  # fingerprinted by its files' sizes
    assert dataset_fingerprint(spec) != first
    with pytest.raises(DataError, match="b.bin is missing"):
        build_dataset(spec, "val")
