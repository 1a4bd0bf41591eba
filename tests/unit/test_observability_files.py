"""Static checks of the monitoring files (no Docker here): the Grafana dashboard queries only series the code
defines, through the provisioned data source; Prometheus scrapes every container that serves /metrics; the
compose file mounts what exists; the web console's health page reads the same endpoints."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "fashionnet.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "fashionnet.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "without", "avg", "max", "min"}


def defined_series() -> set[str]:
    """Every sample name the code's prometheus_client metrics expose (a Counter "x" or "x_total" is x_total)."""
    names: set[str] = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py")]:
        for kind, name in re.findall(r"\b(Counter|Gauge|Histogram)\(\s*\"([a-z_:][a-z0-9_:]*)\"", path.read_text()):
            base = name.removesuffix("_total") if kind == "Counter" else name
            names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_what_its_script_writes() -> None:
    sys.path.insert(0, str(DASHBOARD.parents[1]))
    try:
        import make_dashboard
    finally:
        sys.path.pop(0)
    assert DASHBOARD.read_text() == make_dashboard.render(), "run python deploy/grafana/make_dashboard.py"


def test_dashboard_panels_are_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 8
    cells = set()
    for p in board["panels"]:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        cell = (grid["x"], grid["y"])
        assert cell not in cells, f"{p['title']} overlaps another panel"
        cells.add(cell)
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])


def test_dashboard_queries_name_series_the_code_defines() -> None:
    series = defined_series()
    assert "fashion_kafka_consumer_lag" in series and "grpc_server_handled_total" in series  # the scan works
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    covered = set()
    for p in dashboard()["panels"]:
        for target in p["targets"]:
            assert target["datasource"]["uid"] == p["datasource"]["uid"] == datasource["uid"], p["title"]
            expr = target["expr"]
            for opening, closing in ("()", "[]", "{}"):
                assert expr.count(opening) == expr.count(closing), f"{p['title']}: unbalanced {opening}{closing}"
            without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
            names = {w for w in re.findall(r"[a-z_][a-z0-9_]*", without_labels) if w not in PROMQL_WORDS}
            labels = set(re.findall(r"by \(([^)]*)\)", expr))
            names -= {label.strip() for group in labels for label in group.split(",")}
            unknown = names - series
            assert not unknown, f"{p['title']}: {sorted(unknown)} is no series the code defines"
            for counter in re.findall(r"(?:rate|increase)\(([a-z0-9_]+)", expr):
                assert counter.endswith(("_total", "_bucket", "_sum", "_count")), f"rate() of a gauge: {counter}"
            covered |= names
    # What the issue asks the dashboard to show: ingest lag, indexed/s, DLQ, model batches, latency.
    assert {"fashion_kafka_consumer_lag", "fashion_ingest_images_total", "fashion_kafka_records_dlq_total",
            "fashion_batch_size_sum", "grpc_server_handling_seconds_bucket"} <= covered


def _metrics_ports() -> dict[str, int]:
    """Compose service -> the port its /metrics listens on (every interface), for those that serve it."""
    anchors = compose()["x-grpc-env"]
    ports = {}
    for name, svc in compose()["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, dict) and int(env.get("FASHION_METRICS_PORT", 0)) > 0:
            assert env.get("FASHION_HOST") == "0.0.0.0", f"{name}: /metrics on loopback cannot be scraped"
            ports[name] = int(env["FASHION_METRICS_PORT"])
    assert anchors["FASHION_METRICS_PORT"] == "9100"
    return ports


def test_prometheus_scrapes_every_container_with_metrics() -> None:
    ports = _metrics_ports()
    assert {"search", "ingest", "admin", "analysis"} <= set(ports)
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{port}" for name, port in ports.items()}


def test_compose_wires_prometheus_grafana_and_the_console() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), f"pin {name}'s image"
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090 and "9090:9090" in services["prometheus"]["ports"]
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    mounted = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert provider["options"]["path"] in mounted and "/etc/grafana/provisioning" in mounted
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    # The console's health page reads the endpoints Prometheus scrapes.
    ports = _metrics_ports()
    urls = services["console"]["environment"]["FASHION_CONSOLE_METRICS_URLS"].split(",")
    for u in urls:
        parts = urlsplit(u)
        assert ports.get(parts.hostname) == parts.port and parts.path == "/metrics", u
