"""Settings that cannot work are refused at start; beat's schedule is keyed by task name."""

from __future__ import annotations

import pytest
from celery.schedules import crontab
from pydantic import ValidationError

from bionic_common.tasks import PRUNE_DECAYED, SUPPRESS_CLUSTERS
from bionic_worker.app import beat_schedule
from bionic_worker.broker import connection_settings
from bionic_worker.config import WorkerSettings


@pytest.mark.parametrize(
    "bad",
    [
        {"soft_time_limit": 90, "time_limit": 60},
        {"visibility_timeout": 60, "time_limit": 90},  # a running task would come back
        {"summary_timeout": 70, "soft_time_limit": 60},
        {"suppress_cron": "every night"},
    ],
)
def test_settings_that_cannot_work_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**bad)  # type: ignore[arg-type]


def test_beat_prunes_each_tier_on_its_period_and_suppresses_nightly() -> None:
    schedule = beat_schedule(
        WorkerSettings(prune_short_term_every=600, prune_long_term_every=3600)  # type: ignore[call-arg]
    )
    assert schedule[f"{PRUNE_DECAYED}:stm"]["args"] == ["stm"]
    assert schedule[f"{PRUNE_DECAYED}:stm"]["schedule"] == 600
    assert schedule[f"{PRUNE_DECAYED}:ltm"]["args"] == ["ltm"]
    assert schedule[f"{PRUNE_DECAYED}:ltm"]["schedule"] == 3600
    nightly = schedule[SUPPRESS_CLUSTERS]["schedule"]
    assert nightly == crontab(minute="0", hour="3")
    assert {e["task"] for e in schedule.values()} == {PRUNE_DECAYED, SUPPRESS_CLUSTERS}


def test_sqlite_urls_get_the_leased_transport_and_redis_its_visibility_timeout() -> None:
    sqlite = connection_settings("sqla+sqlite:////data/broker.sqlite", 600)
    assert sqlite["broker_url"] == "sqlite:////data/broker.sqlite"
    assert sqlite["broker_transport"] == "bionic_worker.broker:LeasedTransport"
    redis = connection_settings("redis://127.0.0.1:6379/0", 600)
    assert redis["broker_url"] == "redis://127.0.0.1:6379/0"
    assert redis["broker_transport_options"]["visibility_timeout"] == 600
