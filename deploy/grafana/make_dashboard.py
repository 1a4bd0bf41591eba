"""Writes deploy/grafana/dashboards/fashionnet.json: one Grafana dashboard over the services' Prometheus metrics
(the same figures as the web console's health page). Run it after changing a panel:

    python deploy/grafana/make_dashboard.py

tests/unit/test_observability_files.py checks that the file is what this script writes and that every series a
panel queries is one the code defines.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "fashionnet.json"
DATASOURCE = {"type": "prometheus", "uid": "fashion-prometheus"}

# (title, unit, [(legend, PromQL)]), laid out two per row.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Ingest lag (records behind)", "short",
     [("{{topic}}", "sum by (topic) (fashion_kafka_consumer_lag)")]),
    ("Indexed images/s", "short",
     [("images/s", "sum(rate(fashion_ingest_images_total[1m]))")]),
    ("Catalogue events by outcome (/s)", "short",
     [("{{outcome}}", "sum by (outcome) (rate(fashion_ingest_events_total[5m]))")]),
    ("Dead-lettered records (15 min)", "short",
     [("{{topic}}", "sum by (topic) (increase(fashion_kafka_records_dlq_total[15m]))"),
      ("catalogue: {{error_type}}", "sum by (error_type) (increase(fashion_ingest_failures_total[15m]))")]),
    ("Model batch size (mean)", "short",
     [("{{batcher}}", "sum by (batcher) (rate(fashion_batch_size_sum[5m])) / "
                      "sum by (batcher) (rate(fashion_batch_size_count[5m]))")]),
    ("Model batch queue wait (p95)", "s",
     [("{{batcher}}", "histogram_quantile(0.95, sum by (le, batcher) "
                      "(rate(fashion_batch_queue_seconds_bucket[5m])))")]),
    ("RPC latency (p95)", "s",
     [("{{grpc_method}}", "histogram_quantile(0.95, sum by (le, grpc_method) "
                          "(rate(grpc_server_handling_seconds_bucket[5m])))")]),
    ("RPC errors (/s)", "short",
     [("{{grpc_method}} {{grpc_code}}",
       'sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{grpc_code!="OK"}[5m]))')]),
    ("Searches and clicks (/s)", "short",
     [("searches", "sum(rate(fashion_search_queries_total[5m]))"),
      ("clicks", "sum(rate(fashion_search_clicks_written_total[5m]))")]),
    ("Search log backlog", "short",
     [("pending", "sum(fashion_search_log_pending)"),
      ("write failures (15 min)", "sum(increase(fashion_search_log_write_failures_total[15m]))")]),
]


def panel(index: int, title: str, unit: str, queries: list[tuple[str, str]]) -> dict:
    return {
        "id": index + 1, "type": "timeseries", "title": title, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                    for i, (legend, expr) in enumerate(queries)],
    }


def dashboard() -> dict:
    return {
        "uid": "fashionnet-overview", "title": "FashionNet", "tags": ["fashionnet"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
