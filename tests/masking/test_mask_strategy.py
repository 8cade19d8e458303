import pytest
import torch

from mimkit.errors import ConfigError
from mimkit.masking import (
    MaskStrategy,
    ScoreSpec,
    cls_attention_scores,
    minmax_normalize,
    parse_score,
    parse_strategies,
    parse_strategy,
)
from mimkit.models import Readout, ReadoutRequest


@pytest.mark.parametrize(
    "text, mode, kind, layers, power",
    [
        ("high@raw:11", "high", "raw", (11,), 0.5),
        ("hint@rollout:8-11", "hint", "rollout", (8, 11), 0.5),
        ("low@power:-1:0.5", "low", "power", (11,), 0.5),
        ("low@power:3:2", "low", "power", (3,), 2.0),
        ("low@power", "low", "power", (11,), 0.5),
        ("high@multi:4+8+11", "high", "multi", (4, 8, 11), 0.5),
        ("high", "high", "raw", (11,), 0.5),
        ("hint", "hint", "raw", (11,), 0.5),
        ("high@log:-2", "high", "log", (10,), 0.5),
        ("high@log", "high", "log", (11,), 0.5),
        ("high@rollout", "high", "rollout", (0, 11), 0.5),
        ("high@rollout:-4--1", "high", "rollout", (8, 11), 0.5),
        (" HIGH@raw:0 ", "high", "raw", (0,), 0.5),
    ],
)
def test_parse_examples(text, mode, kind, layers, power):
    s = parse_strategy(text, depth=12)
    assert s.mode == mode and s.attention_guided
    assert s.score == ScoreSpec(kind, layers, power)
    assert s.text == text.strip()


@pytest.mark.parametrize("text", ["random", "block"])
def test_parse_data_independent(text):
    s = parse_strategy(text, depth=12)
    assert s == MaskStrategy(text, None, text) and not s.attention_guided


def test_parse_without_depth_keeps_negative_layers():
    assert parse_strategy("high").score == ScoreSpec("raw", (-1,))
    assert parse_strategy("high@rollout").score == ScoreSpec("rollout", (0, -1))
    assert parse_score("multi:-1+4") == ScoreSpec("multi", (-1, 4))
    assert parse_score("multi:-1+4", depth=6) == ScoreSpec("multi", (5, 4))
    assert parse_score("power:2:1.5").power == 1.5


@pytest.mark.parametrize(
    "text, match",
    [
        ("middle", "unknown mask mode 'middle'"),
        ("high@median:3", "unknown score 'median'"),
        ("high@raw:x", "bad layer 'x'"),
        ("high@raw:1.5", "bad layer '1.5'"),
        ("high@raw:12", "layer 12 is out of range for a backbone of depth 12 in 'high@raw:12'"),
        ("high@raw:-13", "layer -13 is out of range"),
        ("high@multi:4+12", "layer 12 is out of range"),
        ("high@multi:4++5", "bad layer ''"),
        ("high@multi", "multi"),
        ("hint@rollout:11-8", "backwards"),
        ("hint@rollout:-1-3", "backwards"),
        ("hint@rollout:8", "bad rollout range"),
        ("hint@rollout:3-14", "layer 14 is out of range"),
        ("low@power:-1:0", "bad exponent '0'"),
        ("low@power:-1:-2", "bad exponent"),
        ("low@power:-1:inf", "bad exponent"),
        ("low@power:-1:nan", "bad exponent"),
        ("low@power:-1:abc", "bad exponent"),
        ("low@power:1:2:3", "power"),
        ("high@raw:1:2", "one layer"),
        ("random@raw:3", "takes no @SCORE"),
        ("block@rollout", "takes no @SCORE"),
        ("high@", "missing score"),
        ("", "empty"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_strategy(text, depth=12)


def test_parse_errors_are_value_errors_and_one_line():
    with pytest.raises(ValueError) as e:
        parse_strategy("high@raw:40", depth=12)
    assert "\n" not in str(e.value)


def test_parse_strategies():
    one = parse_strategies(["high@raw:11"], 2, 12)
    assert [s.score.layers for s in one] == [(11,), (11,)]
    assert len(parse_strategies("block", 3, 12)) == 3
    two = parse_strategies(["high@raw:11", "high@raw:4"], 2, 12)
    assert [s.score.layers for s in two] == [(11,), (4,)]
    with pytest.raises(ConfigError, match="3 mask strategies given for 2 global crops"):
        parse_strategies(["high", "low", "random"], 2, 12)
    with pytest.raises(ConfigError, match="no mask strategy"):
        parse_strategies([], 2, 12)
    with pytest.raises(ConfigError, match="out of range"):
        parse_strategies(["high", "high@raw:12"], 2, 12)


def test_readout_request_and_compute():
    depth = 4
    assert parse_score("raw:-1").readout_request(depth) == ReadoutRequest(frozenset({3}))
    assert parse_score("multi:0+2").readout_request(depth).cls_layers == frozenset({0, 2})
    assert parse_score("rollout:1-2").readout_request(depth) == ReadoutRequest(
        rollout_ranges=frozenset({(1, 2)})
    )
    g = torch.Generator().manual_seed(0)
    cls = {l: torch.rand(3, 2, 9, generator=g).softmax(-1) for l in range(depth)}
    roll = {(1, 2): torch.rand(3, 9, generator=g)}
    ro = Readout(cls_attn=cls, rollout=roll)
    torch.testing.assert_close(parse_score("raw:1", depth).compute(ro), cls[1].mean(1))
    torch.testing.assert_close(parse_score("log:2", depth).compute(ro), cls[2].log().mean(1))
    torch.testing.assert_close(parse_score("power:0:2", depth).compute(ro), cls[0].pow(2).mean(1))
    torch.testing.assert_close(
        parse_score("rollout:1-2", depth).compute(ro), roll[(1, 2)]
    )
    multi = parse_score("multi:0+3", depth).compute(ro)
    expect = (
        minmax_normalize(cls_attention_scores(cls[0]))
        + minmax_normalize(cls_attention_scores(cls[3]))
    ) / 2
    torch.testing.assert_close(multi, expect)
    assert multi.min() >= 0 and multi.max() <= 1
    with pytest.raises(ValueError, match="resolve"):
        parse_score("raw:-1").compute(ro)
    with pytest.raises(ValueError, match="no rollout"):
        parse_score("rollout:0-3", depth).compute(ro)


def test_str_round_trips():
    for text in ["raw:3", "log:0", "power:2:0.25", "rollout:1-5", "multi:1+2+3"]:
        assert str(parse_score(text)) == text
        assert parse_score(str(parse_score(text))) == parse_score(text)
