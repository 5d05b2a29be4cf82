"""Bad input is refused at the door, with the field named, before anything is stored (issue 12's
findings: NaN rewards stored, 1 MB and NUL-carrying ids stored, an empty conversation id that errored but
still stored a turn and a session, unknown runner arguments ignored)."""

import math

import pytest

from ratchet.core.errors import UserError
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner

Q = "where is my parcel?"


@pytest.fixture
def served(ws):
    Runner(ws, seed=1).call("answer", {"question": Q, "conversation_id": "c0"})
    return ws


def _refused(call, field: str) -> UserError:
    with pytest.raises(UserError) as caught:
        call()
    assert caught.value.field == field and field in str(caught.value) and caught.value.fix
    return caught.value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_reward_refuses_non_finite_numbers_single_and_batched(served, value):
    tuner = Tuner(served)
    _refused(lambda: tuner.feedback("reward", {"conversation_id": "c0", "value": value}), "value")
    _refused(lambda: tuner.feedback("reward_batch", {"events": [{"conversation_id": "c0", "value": 1},
                                                                {"conversation_id": "c0", "value": value}]}),
             "events[1].value")
    assert served.store.last_feedback_seq() == 0


@pytest.mark.parametrize("field, bad", [
    ("event_id", "x" * 1_000_000), ("event_id", "e\x00vil"), ("event_id", ""),
    ("conversation_id", ""), ("conversation_id", "c" * 201),
])
def test_feedback_ids_must_fit_the_store(served, field, bad):
    tuner = Tuner(served)
    args = {"conversation_id": "c0", "value": 1, field: bad}
    error = _refused(lambda: tuner.feedback("reward", args), field)
    assert "nothing was stored" in str(error)
    assert served.store.last_feedback_seq() == 0


@pytest.mark.parametrize("bad", ["", "c" * 1_000_000, "nul\x00here"])
def test_runner_refuses_bad_conversation_ids_and_stores_no_turn(ws, bad):
    runner = Runner(ws, seed=1)
    _refused(lambda: runner.call("answer", {"question": Q, "conversation_id": bad}), "conversation_id")
    with ws.store.engine.connect() as conn:  # (PostgreSQL cannot even be asked about an id with NUL)
        assert conn.exec_driver_sql("SELECT count(*) FROM turns").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM sessions").scalar_one() == 0


def test_runner_refuses_unknown_arguments_by_name(ws):
    runner = Runner(ws, seed=1)
    error = _refused(lambda: runner.call("answer", {"question": Q, "conversation_id": "c1", "colour": "red"}),
                     "colour")
    assert "question" in error.fix and ws.store.session("c1") is None


def test_runner_refuses_non_finite_numbers_anywhere_in_the_arguments(ws):
    runner = Runner(ws, seed=1)
    _refused(lambda: runner.call("answer", {"question": [1.0, math.nan], "conversation_id": "c1"}), "question[1]")
    assert ws.store.session("c1") is None
