"""herald.retry: what a status means, and the retry schedule."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.retry import Verdict, classify_status, max_attempts, next_delay, parse_retry_after
from herald.settings import DEFAULT_RETRY_SCHEDULE, Settings

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
NO_JITTER = Settings(retry_jitter=0.0)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SUCCESS),
        (201, Verdict.SUCCESS),
        (204, Verdict.SUCCESS),
        (299, Verdict.SUCCESS),
        (100, Verdict.PERMANENT),
        (301, Verdict.PERMANENT),
        (302, Verdict.PERMANENT),
        (304, Verdict.PERMANENT),
        (307, Verdict.PERMANENT),
        (308, Verdict.PERMANENT),
        (400, Verdict.PERMANENT),
        (401, Verdict.PERMANENT),
        (403, Verdict.PERMANENT),
        (404, Verdict.PERMANENT),
        (405, Verdict.PERMANENT),
        (408, Verdict.RETRY),
        (409, Verdict.PERMANENT),
        (410, Verdict.GONE),
        (413, Verdict.PERMANENT),
        (422, Verdict.PERMANENT),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (599, Verdict.RETRY),
        (600, Verdict.PERMANENT),
    ],
)
def test_classify_status(status: int, verdict: Verdict) -> None:
    assert classify_status(status) is verdict


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("2", 2.0),
        (" 120 ", 120.0),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thu, 01 Jan 2026 13:00:00 +0100", 0.0),
        ("Thu, 01 Jan 2026 12:01:00 -0000", 60.0),
        ("Wed, 31 Dec 2025 12:00:00 GMT", 0.0),  # in the past: now
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("²", None),
        ("Thu, 99 Foo 2026", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@given(st.text())
def test_parse_retry_after_never_raises(value: str) -> None:
    parsed = parse_retry_after(value, now=NOW)
    assert parsed is None or parsed >= 0


def test_parse_retry_after_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_retry_after("5", now=datetime.datetime(2026, 1, 1))


def test_default_schedule() -> None:
    settings = Settings()
    assert max_attempts(settings) == 8
    delays = [next_delay(attempt=n, settings=NO_JITTER, retry_after=None, rand=0.5) for n in range(1, 8)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert sum(DEFAULT_RETRY_SCHEDULE) / 3600 == pytest.approx(27.6, abs=0.05)
    assert next_delay(attempt=8, settings=settings, retry_after=None, rand=0.5) is None


@pytest.mark.parametrize(
    ("rand", "factor"),
    [(0.0, 0.8), (0.25, 0.9), (0.5, 1.0), (0.75, 1.1)],
)
def test_jitter_scales_the_scheduled_delay(rand: float, factor: float) -> None:
    assert next_delay(attempt=2, settings=Settings(), retry_after=None, rand=rand) == pytest.approx(
        300 * factor
    )


@given(
    schedule=st.lists(st.floats(min_value=0.01, max_value=1e6), min_size=1, max_size=10).map(tuple),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    data=st.data(),
)
def test_delay_stays_within_jitter(
    schedule: tuple[float, ...], jitter: float, rand: float, data: st.DataObject
) -> None:
    settings = Settings(retry_schedule=schedule, retry_jitter=jitter)
    attempt = data.draw(st.integers(min_value=1, max_value=len(schedule)))
    delay = next_delay(attempt=attempt, settings=settings, retry_after=None, rand=rand)
    assert delay is not None
    base = schedule[attempt - 1]
    assert base * (1 - jitter) - 1e-9 <= delay <= base * (1 + jitter) + 1e-9


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(2.0, 2.0), (0.0, 1.0), (0.2, 1.0), (3600.0, 3600.0), (86400.0, 3600.0)],
)
def test_retry_after_replaces_the_schedule_clamped_and_unjittered(
    retry_after: float, expected: float
) -> None:
    for rand in (0.0, 0.99):
        assert next_delay(attempt=1, settings=Settings(), retry_after=retry_after, rand=rand) == expected


def test_exhaustion_wins_over_retry_after() -> None:
    settings = Settings(retry_schedule=(1.0, 2.0))
    assert max_attempts(settings) == 3
    assert next_delay(attempt=2, settings=settings, retry_after=None, rand=0.5) == 2.0
    assert next_delay(attempt=3, settings=settings, retry_after=None, rand=0.5) is None
    assert next_delay(attempt=3, settings=settings, retry_after=5.0, rand=0.5) is None


def test_empty_schedule_means_one_attempt() -> None:
    settings = Settings(retry_schedule=())
    assert max_attempts(settings) == 1
    assert next_delay(attempt=1, settings=settings, retry_after=None, rand=0.0) is None


@pytest.mark.parametrize(
    ("attempt", "rand"),
    [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)],
)
def test_next_delay_refuses_nonsense(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError, match=r"attempt|rand"):
        next_delay(attempt=attempt, settings=Settings(), retry_after=None, rand=rand)
