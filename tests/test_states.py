"""The transition table as pure data: tested without a database."""

from __future__ import annotations

import pytest

from sluice.errors import IllegalTransition, UserError, one_line
from sluice.states import (
    END,
    FREE,
    RUNNABLE,
    TRANSITIONS,
    Change,
    S,
    State,
    after_exit,
    after_failure,
    check,
    check_path,
    event_rows,
    exit_state,
    needs_hook,
    parse_state,
    ready_path,
    spends_retry,
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


# ---------------------------------------------------------------- what follows a run: one decision, pure


def _path(changes: list[Change]) -> list[str]:
    return [changes[0].from_state] + [c.to_state for c in changes]


def test_every_decision_is_a_legal_path_that_lets_go_of_the_session() -> None:
    for frm, via in ((S.RUNNING, S.RUN_ERROR), (S.RUNNING, S.RUN_TIMEOUT), (S.RUNNING, None),
                     (S.RUN_ERROR, None), (S.RUN_TIMEOUT, None)):
        for policy in ("retry", "fail"):
            for used in (0, 3):
                out = after_failure(7, frm, "why", retry_count=used, max_retries=3, via=via, policy=policy)
                check_path(frm, [c.to_state for c in out])
                assert out[-1].fields == FREE
                assert out[-1].to_state == (S.RESTART_READY if policy == "retry" and used < 3 else S.FAILED)


def test_a_retry_spends_one_of_the_budget_and_says_which() -> None:
    out = after_failure(1, S.RUNNING, "exit code 2", via=S.RUN_ERROR, retry_count=1, max_retries=3,
                        data={"exit_code": 2}, at=5.0)
    assert _path(out) == [S.RUNNING, S.RUN_ERROR, S.RESTART_READY]
    assert (out[0].message, out[0].data, out[1].message) == ("exit code 2", {"exit_code": 2}, "retry 2 of 3")
    assert [spends_retry(c) for c in out] == [False, True]
    assert all(c.at == 5.0 for c in out)


def test_a_lost_session_says_why_on_the_retry_itself() -> None:
    (c,) = after_failure(1, S.RUNNING, "launcher session 4 was lost", retry_count=0, max_retries=1)
    assert (c.to_state, c.message) == (S.RESTART_READY, "retry 1 of 1: launcher session 4 was lost")


def test_out_of_retries_fails_through_run_error_with_the_cause() -> None:
    out = after_failure(1, S.RUNNING, "launcher session 4 was lost", retry_count=2, max_retries=2)
    assert _path(out) == [S.RUNNING, S.RUN_ERROR, S.FAILED]
    assert out[-1].message == "no retries left (2 allowed): launcher session 4 was lost"


def test_timeouts_are_bounded_like_errors() -> None:
    """Balsam retried timeouts forever."""
    out = after_failure(1, S.RUNNING, "exceeded its wall time", via=S.RUN_TIMEOUT, retry_count=5, max_retries=5)
    assert _path(out) == [S.RUNNING, S.RUN_TIMEOUT, S.FAILED]


def test_policy_fail_fails_at_once_and_a_handlers_note_is_kept() -> None:
    out = after_failure(1, S.RUN_ERROR, None, retry_count=0, max_retries=3, policy="fail", note="handler ran")
    assert [(c.to_state, c.message) for c in out] == [(S.FAILED, "policy says fail; handler ran")]


def test_exit_zero_without_hooks_finishes_in_one_write() -> None:
    changes, to_pool = after_exit(1, 0, False, retry_count=0, max_retries=3, on_error="retry", on_timeout="retry",
                                  needs_pool=False, t=3.0)
    (c,) = changes
    assert not to_pool and c.path() == (S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED) and c.via_at == (3.0, 3.0)


def test_a_run_with_hooks_goes_to_the_pool() -> None:
    changes, to_pool = after_exit(1, 1, False, retry_count=0, max_retries=3, on_error="retry", on_timeout="retry",
                                  needs_pool=True, t=3.0)
    assert to_pool and [c.to_state for c in changes] == [S.RUN_ERROR]
    assert exit_state(0, False) == S.RUN_DONE and exit_state(1, False) == S.RUN_ERROR
    assert exit_state(0, True) == S.RUN_TIMEOUT
    assert needs_hook(S.RUN_DONE, postprocess=None, stage_out=["x"], error_handler=None, timeout_handler=None)
    assert not needs_hook(S.RUN_ERROR, postprocess="p", stage_out=None, error_handler=None, timeout_handler=None)


def test_one_line_never_raises() -> None:
    """A message-less exception made `str(e).splitlines()[0]` raise inside the launcher's writer thread."""
    assert one_line(RuntimeError()) == "RuntimeError"
    assert one_line(ValueError("\n\n  second line is first  \nthird")) == "second line is first"
    assert one_line("x" * 500, 10) == "x" * 10
