from __future__ import annotations

import pytest

from mimkit.ibot.schedules import Schedules
from mimkit.train.schedules import cosine


def make(**kw) -> Schedules:
    args = dict(
        steps_per_epoch=10,
        epochs=10,
        lr=1e-3,
        min_lr=1e-6,
        warmup_epochs=2,
        weight_decay=0.04,
        weight_decay_end=0.4,
        momentum_teacher=0.996,
        teacher_temp=0.07,
        warmup_teacher_temp=0.04,
        teacher_patch_temp=0.06,
        warmup_teacher_patch_temp=0.03,
        warmup_teacher_temp_epochs=3,
    )
    args.update(kw)
    return Schedules(**args)


def test_lr_warms_up_linearly_then_follows_a_cosine_to_min_lr():
    s = make()
    assert s.learning_rate(0) == 0.0
    assert s.learning_rate(10) == pytest.approx(5e-4)
    assert s.learning_rate(20) == pytest.approx(1e-3)
    values = [s.learning_rate(i) for i in range(20, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert s.learning_rate(100) == pytest.approx(1e-6)


def test_wd_and_momentum_rise_on_cosines_to_their_ends():
    s = make()
    assert s.wd(0) == pytest.approx(0.04) and s.wd(100) == pytest.approx(0.4)
    assert s.momentum(0) == pytest.approx(0.996) and s.momentum(100) == pytest.approx(1.0)
    assert s.wd(50) == pytest.approx(0.22)


def test_teacher_temperatures_warm_up_then_hold():
    s = make()
    assert s.teacher_temps(0) == pytest.approx((0.04, 0.03))
    assert s.teacher_temps(15) == pytest.approx((0.055, 0.045))
    assert s.teacher_temps(30) == pytest.approx((0.07, 0.06))
    assert s.teacher_temps(99) == pytest.approx((0.07, 0.06))


def test_cosine_without_warmup_starts_at_start():
    assert cosine(0, 10, 1.0, 0.0) == 1.0 and cosine(5, 10, 1.0, 0.0) == pytest.approx(0.5)


def test_reference_lr_warmup_is_a_linspace_reaching_the_peak_one_step_earlier():
    w = 20  # 2 warm-up epochs of 10 steps
    ref, ours = make(lr_warmup="linspace"), make()
    assert ref.learning_rate(0) == 0.0 and ours.learning_rate(0) == 0.0
    assert ref.learning_rate(w - 1) == pytest.approx(1e-3)  # linspace(0, lr, W)[W-1] = lr
    assert ours.learning_rate(w - 1) == pytest.approx(1e-3 * (w - 1) / w)
    assert ref.learning_rate(w) == pytest.approx(1e-3) == ours.learning_rate(w)
    assert ref.learning_rate(7) == pytest.approx(1e-3 * 7 / (w - 1))
    for step in range(w, 100):  # the same cosine afterwards
        assert ref.learning_rate(step) == ours.learning_rate(step)


def test_reference_teacher_temperature_is_per_epoch():
    s = make(teacher_temp_warmup="epoch")  # warm-up over 3 epochs of 10 steps
    expected = {0: (0.04, 0.03), 1: (0.055, 0.045), 2: (0.07, 0.06), 3: (0.07, 0.06)}
    for epoch, temps in expected.items():  # linspace(warm, final, 3)[epoch], then final
        for step in range(epoch * 10, epoch * 10 + 10):  # held for the whole epoch
            assert s.teacher_temps(step) == pytest.approx(temps)
    assert s.teacher_temps(99) == pytest.approx((0.07, 0.06))


def test_patch_temperature_warms_up_from_the_mask_start_epoch():
    s = make(teacher_temp_warmup="epoch", mask_start_epoch=2)
    patch = [s.teacher_temps(e * 10)[1] for e in range(7)]
    # iBOT: warm for the epochs without masks, then linspace over the warm-up epochs.
    assert patch == pytest.approx([0.03, 0.03, 0.03, 0.045, 0.06, 0.06, 0.06])
    assert [s.teacher_temps(e * 10)[0] for e in range(4)] == pytest.approx(
        [0.04, 0.055, 0.07, 0.07]
    )
    per_step = make(mask_start_epoch=2)
    assert per_step.teacher_temps(15)[1] == pytest.approx(0.03)
    assert per_step.teacher_temps(35)[1] == pytest.approx(0.045)  # 1.5 of 3 epochs in
    assert per_step.teacher_temps(50)[1] == pytest.approx(0.06)
