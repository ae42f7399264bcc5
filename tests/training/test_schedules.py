import itertools

import pytest

from textae.training.schedules import learning_rate_factor, teacher_forcing_ratio


@pytest.mark.parametrize("schedule", ["linear", "exponential", "inverse_sigmoid"])
def test_decaying_schedules_go_from_start_to_end_monotonically(schedule: str) -> None:
    values = [teacher_forcing_ratio(schedule, step, 1.0, 0.5, 100) for step in range(0, 151, 5)]
    assert values[0] == pytest.approx(1.0, abs=0.01)
    assert values[20] == pytest.approx(0.5, abs=0.01)  # step 100
    assert values[-1] == pytest.approx(0.5, abs=0.01)  # held after decay_steps
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_schedule_shapes_differ_in_the_middle() -> None:
    middle = {s: teacher_forcing_ratio(s, 50, 1.0, 0.0, 100) for s in ("linear", "exponential", "inverse_sigmoid")}
    assert middle["linear"] == pytest.approx(0.5)
    assert middle["exponential"] == pytest.approx(0.1)  # geometric: 0.01 ** 0.5
    assert middle["inverse_sigmoid"] == pytest.approx(0.5)
    assert teacher_forcing_ratio("inverse_sigmoid", 25, 1.0, 0.0, 100) > teacher_forcing_ratio("linear", 25, 1.0, 0.0, 100)


def test_constant_schedule() -> None:
    assert {teacher_forcing_ratio("constant", step, 0.9, 0.1, 10) for step in range(20)} == {0.9}


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        teacher_forcing_ratio("cubic", 0, 1.0, 0.0, 10)


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    assert learning_rate_factor("cosine", 0, 10, 100) == pytest.approx(0.1)
    assert learning_rate_factor("cosine", 9, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor("cosine", 10, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor("cosine", 100, 10, 100) == pytest.approx(0.1)
    assert learning_rate_factor("constant", 100, 10, 100) == 1.0
