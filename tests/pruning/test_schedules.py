"""Pruning schedules against their formulas; the dynamic schedule's hold/step rule."""

from __future__ import annotations

import pytest

from autoprune.errors import ConfigError
from autoprune.pruning.schedules import SCHEDULES, make_schedule


def _run(schedule, epochs: int, losses=None) -> dict[int, float]:
    """Epoch → ramp for every epoch that takes a step."""
    out = {}
    for e in range(epochs):
        loss = None if losses is None else (lambda e=e: losses[e])
        ramp = schedule.decide(e, val_loss=loss)
        if ramp is not None:
            out[e] = ramp
    return out


def test_registry_holds_the_documented_schedules():
    assert {"one_shot", "linear", "agp", "dynamic"} <= set(SCHEDULES)


def test_one_shot_prunes_everything_at_start():
    s = make_schedule("one_shot", start_epoch=2, end_epoch=5)
    assert _run(s, 8) == {2: 1.0}
    assert s.finished()


def test_linear_ramp():
    s = make_schedule("linear", start_epoch=1, end_epoch=5)
    assert _run(s, 8) == pytest.approx({1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0})
    assert s.finished()


def test_agp_matches_zhu_gupta_formula():
    t0, n, dt = 2, 4, 1
    s_i, s_f = 0.1, 0.9
    s = make_schedule("agp", start_epoch=t0, end_epoch=t0 + n * dt)
    got = _run(s, 10)
    assert sorted(got) == [2, 3, 4, 5, 6]
    for t, ramp in got.items():
        expected_sparsity = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3
        assert s_i + (s_f - s_i) * ramp == pytest.approx(expected_sparsity)
    assert got[3] == pytest.approx(1 - 0.75**3)  # = 0.578125: fast at first
    assert got[6] == 1.0


def test_step_epochs_with_frequency_always_end_at_end_epoch():
    s = make_schedule("agp", start_epoch=1, end_epoch=8, frequency=3)
    assert s.step_epochs() == [1, 4, 7, 8]
    got = _run(s, 10)
    assert sorted(got) == [1, 4, 7, 8]
    assert got[4] == pytest.approx(1 - (1 - 3 / 7) ** 3)
    assert got[8] == 1.0
    lin = make_schedule("linear", start_epoch=0, end_epoch=6, frequency=2)
    assert _run(lin, 7) == pytest.approx({0: 0.0, 2: 1 / 3, 4: 2 / 3, 6: 1.0})


def test_start_equals_end_is_a_single_full_step():
    for kind in ("linear", "agp"):
        assert _run(make_schedule(kind, start_epoch=3, end_epoch=3), 5) == {3: 1.0}


def test_dynamic_steps_while_loss_keeps_up():
    s = make_schedule("dynamic", start_epoch=0, end_epoch=3, last_epoch=7, tolerance=0.05)
    got = _run(s, 8, losses=[1.0, 1.02, 1.0, 0.9, 5, 5, 5, 5])
    assert got == pytest.approx({0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0})
    assert s.held == 0 and s.finished()


def test_dynamic_holds_when_loss_rises_then_reaches_target_by_last_epoch():
    s = make_schedule("dynamic", start_epoch=0, end_epoch=3, last_epoch=7, tolerance=0.05)
    losses = [1.0, 1.2, 1.3, 1.04, 2.0, 2.0, 2.0, 2.0]
    got = _run(s, 8, losses)
    # epochs 1, 2: held (20 %, 30 % above the loss before the first step); 3: within 5 %, steps;
    # 4, 5: held (loss 2.0 vs 1.04); 6, 7: as many opportunities left as steps, so it must step
    assert got == pytest.approx({0: 0.25, 3: 0.5, 6: 0.75, 7: 1.0})
    assert s.finished()
    assert s.held == 4


def test_dynamic_always_reaches_target_even_if_loss_only_rises():
    s = make_schedule("dynamic", start_epoch=1, end_epoch=4, last_epoch=9, frequency=2, tolerance=0.0)
    losses = [float(e + 1) for e in range(10)]  # rising every epoch
    got = _run(s, 10, losses)
    assert got[max(got)] == 1.0
    assert max(got) <= 9
    assert all(e >= 1 and (e - 1) % 2 == 0 for e in got)
    assert s.finished()


def test_dynamic_state_round_trip():
    a = make_schedule("dynamic", start_epoch=0, end_epoch=3, last_epoch=7)
    _run(a, 2, [1.0, 2.0])
    b = make_schedule("dynamic", start_epoch=0, end_epoch=3, last_epoch=7)
    b.load_state_dict(a.state_dict())
    assert (b.steps_taken, b.ref_loss, b.held, b.ramp_now) == (a.steps_taken, a.ref_loss, a.held, a.ramp_now)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown schedule 'cubic'; valid: one_shot, linear, agp, dynamic"):
        make_schedule("cubic", start_epoch=0, end_epoch=1)


def test_bad_epochs_and_frequency():
    with pytest.raises(ConfigError, match=r"need 0 <= start_epoch <= end_epoch, got start_epoch=3, end_epoch=1"):
        make_schedule("agp", start_epoch=3, end_epoch=1)
    with pytest.raises(ConfigError, match=r"schedule\.frequency: must be >= 1 epoch, got 0"):
        make_schedule("linear", start_epoch=0, end_epoch=2, frequency=0)
    with pytest.raises(ConfigError, match=r"schedule\.tolerance: must be >= 0, got -0\.1"):
        make_schedule("dynamic", start_epoch=0, end_epoch=2, tolerance=-0.1)
