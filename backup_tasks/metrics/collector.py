"""The metric families, built at each scrape from the job outcomes (Redis, one round trip for all databases)
and the cached listings (sources.py). Labels: `database` (its name in the deployment), `job`, `location`."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import databases, outcomes
from ..errors import BackupError
from ..settings import Settings
from . import sources

logger = logging.getLogger(__name__)
NS = "backup_tasks"


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ("database",)) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NS}_{name}", doc, labels=list(labels))


class BackupCollector(Collector):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.cache = sources.TTLCache(settings.BACKUP_METRICS_CACHE_S)

    def collect(self) -> Iterator[Metric]:
        found, problems = self.cache.get("databases", lambda: databases.all_databases(self.settings))
        names = [db.name for db in found]
        yield from self._outcome_metrics(names)
        yield from self._storage_metrics(found)
        discovery = _gauge("discovery_failed", "1 when the databases of a discover = true server could not be "
                           "listed", ("server",))
        for server in problems:
            discovery.add_metric([server], 1)
        yield discovery

    def _outcome_metrics(self, names: list[str]) -> Iterator[Metric]:
        up = _gauge("outcomes_up", "1 when the job outcomes could be read from Redis", ())
        try:
            read = outcomes.read(names)
        except BackupError as exc:
            logger.warning("metrics: cannot read the job outcomes: %s", exc.message)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        families = {
            "backup:finished": _gauge("last_success_timestamp_seconds", "When the last successful backup job ended"),
            "backup:bytes": _gauge("last_success_size_bytes", "Compressed size of the last successful backup"),
            "backup:duration_s": _gauge("last_success_duration_seconds", "How long the last successful backup took"),
            "backup:rows": _gauge("last_success_rows", "Rows in the last successful backup"),
        }
        failures = CounterMetricFamily(f"{NS}_job_failures", "Failed jobs, by job", labels=["database", "job"])
        last_ok = _gauge("last_job_success", "1 when the last job of this kind succeeded, 0 when it failed",
                         ("database", "job"))
        last_at = _gauge("last_job_timestamp_seconds", "When the last job of this kind ended", ("database", "job"))
        for name, o in read.items():
            for field_name, family in families.items():
                value = o.number(field_name)
                if value is not None:
                    family.add_metric([name], value)
            for job, count in o.failures().items():
                failures.add_metric([name, job], count)
            for job, outcome in o.outcomes().items():
                last_ok.add_metric([name, job], 1 if outcome == "success" else 0)
                finished = o.number(f"{job}:finished")
                if finished is not None:
                    last_at.add_metric([name, job], finished)
        yield from (*families.values(), failures, last_ok, last_at)

    def _storage_metrics(self, found: list[databases.Database]) -> Iterator[Metric]:
        count = _gauge("backups", "Backups stored", ("database", "location"))
        newest = _gauge("newest_backup_timestamp_seconds", "Creation time of the newest stored backup",
                        ("database", "location"))
        size = _gauge("newest_backup_size_bytes", "Size of the newest stored backup", ("database", "location"))
        error = _gauge("listing_failed", "1 when the location could not be listed", ("database", "location"))
        drill_ok = _gauge("last_drill_success", "1 when the newest drill report says the restore drill passed")
        drill_at = _gauge("last_drill_timestamp_seconds", "When the newest restore drill ended")
        for db in found:
            for kind, build in sources.locations(db):
                facts = self.cache.get((db.name, kind), lambda b=build: sources.location_facts(b()))
                labels = [db.name, facts.location]
                error.add_metric(labels, 1 if facts.error else 0)
                if facts.error:
                    continue
                count.add_metric(labels, facts.count)
                if facts.newest_created is not None:
                    newest.add_metric(labels, facts.newest_created)
                    size.add_metric(labels, facts.newest_size or 0)
                if facts.drill is not None and facts.drill.ok is not None:
                    drill_ok.add_metric([db.name], 1 if facts.drill.ok else 0)
                    if facts.drill.finished is not None:
                        drill_at.add_metric([db.name], facts.drill.finished)
        yield from (count, newest, size, error, drill_ok, drill_at)
