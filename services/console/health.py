"""The health page's figures, read from the same Prometheus text the services expose to Prometheus (never from
a store): ingest lag and speed, dead-lettered records and why, model batch sizes, RPC latency."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

MetricsSource = Callable[[], str]


@dataclass
class Histo:
    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile (Prometheus' histogram_quantile, coarser)."""
        wanted = q * self.count
        for bound in sorted(self.buckets):
            if self.buckets[bound] >= wanted and self.count:
                return bound
        return float("nan")


@dataclass
class Health:
    """Sums over every source; keys are label values."""

    lag: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # topic -> records behind
    images_per_second: float = 0.0
    images_indexed: float = 0.0
    events: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # outcome -> events
    dlq: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # source topic -> records dead-lettered
    failures: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # error type -> events
    batches: dict[str, Histo] = field(default_factory=lambda: defaultdict(Histo))  # batcher -> batch size
    latency: dict[str, Histo] = field(default_factory=lambda: defaultdict(Histo))  # Service/Method -> seconds
    codes: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # status code -> RPCs
    searches: float = 0.0
    clicks: float = 0.0
    errors: list[str] = field(default_factory=list)  # sources that could not be read


def url_source(url: str, timeout_s: float = 5.0) -> MetricsSource:
    def read() -> str:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (configured URL)
            return response.read(8 * 2**20).decode("utf-8", "replace")

    read.__name__ = url
    return read


def registry_source() -> MetricsSource:
    """This process's own metrics, exactly as its /metrics endpoint would serve them (`fashion up`)."""
    from prometheus_client import REGISTRY, generate_latest

    def read() -> str:
        return generate_latest(REGISTRY).decode("utf-8")

    read.__name__ = "this process"
    return read


def read_health(sources: Sequence[MetricsSource]) -> Health:
    health = Health()
    for source in sources:
        try:
            text = source()
        except Exception as exc:  # an unreachable pod is shown, not raised
            health.errors.append(f"{getattr(source, '__name__', 'metrics')}: {exc}")
            continue
        add_samples(health, ((s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                             for s in family.samples))
    return health


def add_samples(health: Health, samples: Iterable[tuple[str, dict[str, str], float]]) -> None:
    for name, labels, value in samples:
        if name == "fashion_kafka_consumer_lag":
            health.lag[labels.get("topic", "?")] += value
        elif name == "fashion_ingest_images_per_second":
            health.images_per_second += value
        elif name == "fashion_ingest_images_total":
            health.images_indexed += value
        elif name == "fashion_ingest_events_total":
            health.events[labels.get("outcome", "?")] += value
        elif name == "fashion_kafka_records_dlq_total":
            health.dlq[labels.get("topic", "?")] += value
        elif name == "fashion_ingest_failures_total":
            health.failures[labels.get("error_type", "?")] += value
        elif name == "fashion_search_queries_total":
            health.searches += value
        elif name == "fashion_search_clicks_written_total":
            health.clicks += value
        elif name == "grpc_server_handled_total":
            health.codes[labels.get("grpc_code", "?")] += value
        elif name.startswith("fashion_batch_size_"):
            _histogram(health.batches[labels.get("batcher", "?")], name, labels, value)
        elif name.startswith("grpc_server_handling_seconds_"):
            key = f"{labels.get('grpc_service', '?').rsplit('.', 1)[-1]}/{labels.get('grpc_method', '?')}"
            _histogram(health.latency[key], name, labels, value)


def _histogram(histo: Histo, name: str, labels: dict[str, str], value: float) -> None:
    if name.endswith("_count"):
        histo.count += value
    elif name.endswith("_sum"):
        histo.total += value
    elif name.endswith("_bucket"):
        bound = float(labels.get("le", "inf"))
        histo.buckets[bound] = histo.buckets.get(bound, 0.0) + value
