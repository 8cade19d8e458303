from __future__ import annotations

from pathlib import Path

import pytest
from finetune_fixtures import tiny_finetune_config

from mimkit.finetune import FinetuneConfig


@pytest.fixture
def make_config(tmp_path: Path):
    def make(name: str = "run", **fields: object) -> FinetuneConfig:
        return tiny_finetune_config(tmp_path / name, **fields)

    return make
