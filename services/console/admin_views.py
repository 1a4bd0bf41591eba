"""Models and health pages: the registry, the serving alias and the training runs behind the admin login;
ingest, dead letters, batching and latency from the Prometheus metrics, and the latest dead letters with their
reasons (AdminService, so behind the admin login too)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from fashion.v1 import admin_pb2
from services.console.health import Health
from services.console.layout import hidden, metrics_text, page

ACTIVE_RUN_STATES = frozenset({"queued", "training", "evaluating", "reindexing"})


def login_page(*, error: str | None = None) -> str:
    body = ('<section class="panel"><h1>Models</h1><p>The model registry and its actions need the admin token '
            "(FASHION_ADMIN_TOKEN of the services). It is kept on the console's server for this session only.</p>"
            '<form method="post" action="/login" class="row"><div><label for="token">Admin token</label>'
            '<input type="password" id="token" name="token" autocomplete="current-password" required></div>'
            '<div><button type="submit">Log in</button></div></form></section>')
    return page("Models", body, active="/models", error=error)


def _when(stamp) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else "-"


def _models_table(models: Sequence[admin_pb2.ModelVersion], csrf: str) -> str:
    rows = []
    for m in models:
        state = f'<span class="badge{" serving" if m.serving else ""}">{escape(m.state)}</span>'
        promote = ("" if m.serving else
                   f'<form method="post" action="/models/promote" class="inline">{hidden("csrf", csrf)}'
                   f'{hidden("version", m.version)}<button type="submit" class="secondary" '
                   f'aria-label="Promote {escape(m.version)}">Promote</button></form>')
        rows.append(f"<tr><td>{escape(m.version)}{' (serving alias)' if m.serving else ''}</td><td>{state}</td>"
                    f"<td>{escape(m.architecture)}</td><td>{_when(m.created_at)}</td>"
                    f"<td>{escape(metrics_text(m.metrics))}</td><td>{promote}</td></tr>")
    return ('<table id="models"><caption class="muted">Model versions</caption><thead><tr><th scope="col">version'
            '</th><th scope="col">state</th><th scope="col">architecture</th><th scope="col">created</th>'
            '<th scope="col">metrics</th><th scope="col">action</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _runs_table(runs: Sequence[admin_pb2.TrainingRun]) -> str:
    if not runs:
        return '<p class="muted">No training runs yet.</p>'
    rows = []
    for r in runs:
        state = f'<span class="badge bad">stalled</span> (was {escape(r.state)})' if r.stalled else (
            f'<span class="badge{" bad" if r.state in ("failed", "rejected") else ""}">{escape(r.state)}</span>')
        rows.append(f"<tr><td>{escape(r.run_id)}</td><td>{state}</td><td>{r.epoch}/{r.epochs}</td>"
                    f"<td>{f'{r.loss:.4f}' if r.loss else '-'}</td><td>{escape(r.candidate_version or '-')}</td>"
                    f"<td>{escape(metrics_text(r.metrics))}</td><td>{escape(r.message or '-')}</td>"
                    f"<td>{_when(r.created_at)}</td><td>{_when(r.updated_at)}</td></tr>")
    return ('<table id="runs"><caption class="muted">Training runs, newest first (gate metrics: candidate and '
            'serving_*)</caption><thead><tr><th scope="col">run</th><th scope="col">state</th>'
            '<th scope="col">epoch</th><th scope="col">loss</th><th scope="col">candidate</th>'
            '<th scope="col">gate metrics</th><th scope="col">message</th><th scope="col">created</th>'
            f'<th scope="col">updated</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def models_page(models: Sequence[admin_pb2.ModelVersion], runs: Sequence[admin_pb2.TrainingRun], csrf: str, *,
                error: str | None = None, note: str | None = None) -> str:
    serving = next((m.version for m in models if m.serving), None)
    actions = (
        '<div class="row">'
        f'<form method="post" action="/models/retrain" class="row">{hidden("csrf", csrf)}'
        '<div><label for="reason">Retrain: reason</label><input type="text" id="reason" name="reason"></div>'
        '<div><label for="epochs">Epochs (0 = default)</label>'
        '<input type="number" id="epochs" name="epochs" min="0" value="0"></div>'
        '<div><button type="submit">Retrain from clicks</button></div></form>'
        f'<form method="post" action="/models/rollback">{hidden("csrf", csrf)}'
        '<button type="submit" class="secondary">Roll back to the previous version</button></form>'
        f'<form method="post" action="/logout">{hidden("csrf", csrf)}'
        '<button type="submit" class="secondary">Log out</button></form></div>')
    body = (f'<section class="panel"><h1>Models</h1><p>Serving alias <b>products</b> &rarr; '
            f'<b>{escape(serving or "none")}</b></p>{actions}</section>'
            f"<main>{_models_table(models, csrf)}<h2>Training runs</h2>{_runs_table(runs)}</main>")
    active = any(r.state in ACTIVE_RUN_STATES for r in runs)
    return page("Models", body, active="/models", error=error, note=note, refresh_s=5 if active else None)


def _table(caption: str, headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str) -> str:
    if not rows:
        return f'<h2>{escape(caption)}</h2><p class="muted">{escape(empty)}</p>'
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h2>{escape(caption)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _n(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) or math.isinf(seconds) else f"{seconds * 1000:,.1f} ms"


def _source(letter: admin_pb2.DeadLetter) -> str:
    return f"{letter.source_topic or '?'}[{letter.source_partition}]@{letter.source_offset}"


def dead_letters_section(response: admin_pb2.ListDeadLettersResponse | None, *, logged_in: bool,
                         error: str | None = None) -> str:
    """The newest dead letters, newest first; a line instead when not logged in, unreadable or empty."""
    title = "<h2>Latest dead-lettered records</h2>"
    if not logged_in:
        return (f'{title}<p class="muted" id="dead-letters-login">Log in on the <a href="/models">Models</a> page '
                "with the admin token to see the latest dead-lettered records and why they failed (their reasons "
                "can name the paths and hosts a catalogue event gave).</p>")
    if error is not None or response is None:
        return f'{title}<p class="muted">Not available: {escape(error or "no answer")}</p>'
    missing = (f'<p class="muted">Not on the broker yet (their consumer has not started): '
               f'{escape(", ".join(response.missing_topics))}</p>' if response.missing_topics else "")
    if not response.dead_letters:
        return f'{title}<p class="muted">Nothing dead-lettered.</p>{missing}'
    rows = []
    for d in response.dead_letters:
        reason = escape(d.reason or "-") + (' <span class="muted">(value too large: not copied)</span>'
                                            if d.value_truncated else "")
        rows.append(f"<tr><td>{_when(d.dead_lettered_at)}</td><td>{escape(_source(d))}</td>"
                    f"<td>{escape(d.error_type or '-')}</td><td>{reason}</td><td>{escape(d.key or '-')}</td></tr>")
    return (f'{title}<table id="dead-letters"><caption class="muted">Newest first, times in UTC; from the dead-letter '
            'topics\' headers (record values are not shown)</caption><thead><tr><th scope="col">dead-lettered</th>'
            '<th scope="col">source topic[partition]@offset</th><th scope="col">error type</th>'
            '<th scope="col">reason</th><th scope="col">key</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{missing}")


def health_page(health: Health, sources: Sequence[str], *, logged_in: bool = False,
                dead_letters: admin_pb2.ListDeadLettersResponse | None = None,
                dead_letters_error: str | None = None) -> str:
    overview = [("ingest lag (records behind, all topics)", _n(sum(health.lag.values()))),
                ("indexed images/s (last batch)", _n(health.images_per_second)),
                ("images indexed", _n(health.images_indexed)),
                ("dead-lettered records", _n(sum(health.dlq.values()))),
                ("searches answered", _n(health.searches)), ("clicks written", _n(health.clicks))]
    body = (
        '<section class="panel"><h1>Health</h1><p class="muted">From the Prometheus metrics of '
        f'{escape(", ".join(sources) or "no source")} (the same text Prometheus scrapes), summed since each '
        "process started.</p></section><main>"
        + _table("Overview", ("figure", "value"), overview, empty="")
        + _table("Consumer lag by topic", ("topic", "records behind"),
                 [(t, _n(v)) for t, v in sorted(health.lag.items())], empty="No consumer has reported lag yet.")
        + _table("Catalogue events by outcome", ("outcome", "events"),
                 [(k, _n(v)) for k, v in sorted(health.events.items())], empty="No catalogue event handled yet.")
        + _table("Dead-lettered records by the topic they came from", ("source topic", "records"),
                 [(k, _n(v)) for k, v in sorted(health.dlq.items())],
                 empty="Nothing dead-lettered.")
        + _table("Why catalogue events were dead-lettered", ("reason (error type)", "events"),
                 [(k, _n(v)) for k, v in sorted(health.failures.items(), key=lambda kv: -kv[1])],
                 empty="No catalogue event failed.")
        + dead_letters_section(dead_letters, logged_in=logged_in, error=dead_letters_error)
        + _table("Model batches", ("batcher", "batches", "mean size", "p95 size (bucket)"),
                 [(k, _n(h.count), f"{h.mean:.1f}", _n(h.quantile(0.95))) for k, h in sorted(health.batches.items())],
                 empty="No batch run yet.")
        + _table("RPC latency", ("service/method", "calls", "mean", "p95 (bucket)"),
                 [(k, _n(h.count), _ms(h.mean), _ms(h.quantile(0.95))) for k, h in sorted(health.latency.items())
                  if h.count], empty="No RPC answered yet.")
        + _table("RPCs by status code", ("code", "calls"), [(k, _n(v)) for k, v in sorted(health.codes.items())],
                 empty="No RPC answered yet.")
        + "</main>")
    return page("Health", body, active="/health", error="; ".join(health.errors) or None)
