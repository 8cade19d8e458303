"""The loop measures how long it waits for data, and logs it per epoch."""

from __future__ import annotations

import time

from mimkit.ibot.pretrain import run_pretraining
from mimkit.train.logging import read_log
from mimkit.train.waiting import WaitClock


def test_counts_the_producer_not_the_consumer():
    def slow(n: int, pause: float):
        for i in range(n):
            time.sleep(pause)
            yield i

    clock = WaitClock()
    seen = []
    for item in clock.iterate(slow(4, 0.03)):
        seen.append(item)
        time.sleep(0.2)  # the consumer's own work is not waiting
    assert seen == [0, 1, 2, 3]
    assert 0.12 <= clock.waited < 0.6  # far below the 0.92 s of the whole loop


def test_epoch_log_has_the_data_wait_fraction(make_config):
    cfg = make_config(**{"optim.epochs": 1})
    run_pretraining(cfg)
    (epoch,) = read_log(cfg.run.output_dir, "epoch")
    # No loader workers: every batch is built while the step waits, so some of it is waiting.
    assert 0.0 < epoch["data_wait"] < 1.0
