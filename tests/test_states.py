"""The transition table as pure data: tested without a database."""

from __future__ import annotations

import pytest

from sluice.errors import IllegalTransition, UserError
from sluice.states import (
    END,
    RUNNABLE,
    TRANSITIONS,
    Change,
    S,
    State,
    check,
    check_path,
    event_rows,
    parse_state,
    ready_path,
)


def test_every_state_has_a_row_and_end_states_only_restart() -> None:
    assert set(TRANSITIONS) == set(State)
    for st in END:
        assert TRANSITIONS[st] <= {S.RESTART_READY, S.READY, S.AWAITING_PARENTS}


def test_normal_life_of_a_job_is_legal() -> None:
    check_path(None, [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE,
                      S.POSTPROCESSED, S.JOB_FINISHED])


@pytest.mark.parametrize("frm,to", [(S.CREATED, S.RUNNING), (S.JOB_FINISHED, S.RUNNING),
                                    (S.READY, S.RUN_DONE), (S.RUN_ERROR, S.JOB_FINISHED)])
def test_illegal_transitions_are_refused_with_the_allowed_ones_named(frm: State, to: State) -> None:
    with pytest.raises(IllegalTransition, match=f"from {frm}"):
        check(frm, to)


def test_new_jobs_start_in_created() -> None:
    check(None, S.CREATED)
    with pytest.raises(IllegalTransition):
        check(None, S.READY)


def test_ready_path_stops_where_work_waits() -> None:
    assert ready_path(False, False)[-1] == S.PREPROCESSED
    assert ready_path(False, True)[-1] == S.STAGED_IN
    assert ready_path(True, True) == (S.READY,)
    assert ready_path(False, False)[-1] in RUNNABLE


def test_parse_state_is_case_insensitive_and_names_valid_states() -> None:
    assert parse_state("running") is S.RUNNING
    with pytest.raises(UserError, match="valid states: CREATED"):
        parse_state("DONE")


def test_fast_forward_records_one_event_per_step() -> None:
    c = Change(7, S.RUNNING, S.JOB_FINISHED, "ok", via=(S.RUN_DONE, S.POSTPROCESSED), at=10.0,
               via_at=(5.0, 6.0))
    rows = event_rows(c, "tester", now=99.0)
    assert [(r["from_state"], r["to_state"], r["timestamp"]) for r in rows] == [
        (S.RUNNING, S.RUN_DONE, 5.0), (S.RUN_DONE, S.POSTPROCESSED, 6.0), (S.POSTPROCESSED, S.JOB_FINISHED, 10.0)]
    assert rows[-1]["message"] == "ok" and rows[0]["message"] is None
