"""Start-up warnings of a valid config: a hint strategy that can reveal nothing."""

from __future__ import annotations

import warnings

import pytest

from mimkit.ibot.config import load_config
from mimkit.ibot.validation import validate_config


def _warnings(**fields: object) -> list[str]:
    cfg = load_config("fashion_mnist_vit_mini", list(fields.items()))  # 28 px, 7 px: 4x4 grid
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_config(cfg)
    return [str(w.message) for w in caught]


def test_hint_that_reveals_nothing_is_named_once():
    # floor(0.1 * 0.5 * 16) = 0: AttMask's own show_max reveals nothing on 16 patches.
    (message,) = _warnings(**{"masking.strategies": ["hint", "hint"]})
    assert "'hint' reveals nothing" in message and "4x4" in message
    assert "masking.show_max >= 0.125" in message


@pytest.mark.parametrize(
    "fields",
    [
        {"masking.strategies": ["hint"], "masking.show_max": 0.125},  # floor(0.125*0.5*16) = 1
        {"masking.strategies": ["high"]},
        # 7x7 grid: floor(0.1 * 0.5 * 49) = 2
        {"masking.strategies": ["hint"], "model.patch_size": 4, "data.local_crop_size": 12},
    ],
)
def test_no_warning_when_hint_can_reveal_or_is_not_used(fields):
    assert _warnings(**fields) == []
