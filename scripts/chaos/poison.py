"""Scenario `poison`: a corpus of bad catalogue records, each followed by a good record with the same key (so the
good one queues behind it on its partition).

Every poison record must reach `catalog.uploads.dlq` exactly once with an `error.reason`, and no good record may
wait more than --max-delay seconds from publish to being claimed. An event with an unknown extra field is not
poison (JSON mappings should tolerate additions) and is reported on its own row. Four of the records point at
things ingest must not read: a local file outside the catalogue (/etc/hostname), a valid image file outside it,
an image on a loopback host and a redirect to one; the hosts count requests, and a local file read shows as an
indexed image with that file's sha256 (or a DLQ reason that says the bytes were decoded).
"""

from __future__ import annotations

import json
import os
import socket
import uuid

from . import catalog_events as ev
from .harness import Row, Workspace, wait_for
from .rig import ingest_rig
from .servers import ImageHost, Redirector, png_bytes

PAIR_WAIT_S = 10.0  # longest wait for a good record before the next pair goes out (its delay is still measured)


def corpus(host: ImageHost, redirector: Redirector, outside: str) -> list[tuple[str, bytes, str | None]]:
    """(name, value, event id or None) of each poison record, and the unknown-field event last."""
    pixel = ev.inline(png_bytes(48, (10, 200, 10)))
    event_id = str(uuid.uuid4())
    corrupt = b"\xff\xd8\xff\xe0" + os.urandom(1_900_000)
    records: list[tuple[str, bytes, str | None]] = [
        ("invalid JSON", b'{"eventId": "x", "type": "EVENT_TYPE_UPSERT", "product": {"productId": ', None),
        ("non-UTF-8", json.dumps({"eventId": event_id, "type": 1, "product": {"productId": "p-latin1",
                                  "title": "@@"}, "images": [pixel]}).encode().replace(b"@@", b"caf\xe9"), None),
        ("type 99", *_swap(ev.raw_upsert("p-type99", [pixel], event_type=99))),
        ("missing fields", b'{"type": "EVENT_TYPE_UPSERT", "product": {"title": "no ids, no images"}}', None),
        ("corrupt 1.9 MB image", *_swap(ev.raw_upsert("p-corrupt", [ev.inline(corrupt)]))),
        ("local file /etc/hostname", *_swap(ev.raw_upsert("p-etc", [{"uri": "file:///etc/hostname"}]))),
        ("image file outside the catalogue", *_swap(ev.raw_upsert("p-outside", [{"uri": outside}]))),
        ("loopback URL", *_swap(ev.raw_upsert("p-loopback", [{"uri": host.url("/direct.png")}]))),
        ("redirect to loopback", *_swap(ev.raw_upsert("p-redirect", [{"uri": redirector.url("/r.png")}]))),
    ]
    return records


def _swap(pair: tuple[str, bytes]) -> tuple[bytes, str]:
    event_id, value = pair
    return value, event_id


def run(ws: Workspace, *, max_delay_s: float) -> list[Row]:
    folder = ws.scenario_dir("poison")
    outside_dir = folder / "outside"
    outside_dir.mkdir(exist_ok=True)
    secret = png_bytes(80, (250, 250, 0))
    (outside_dir / "secret.png").write_bytes(secret)
    host = ImageHost()
    with host, Redirector(host.url("/via-redirect.png")) as redirector, ingest_rig(ws, "poison") as rig:
        records = corpus(host, redirector, str(outside_dir / "secret.png"))
        unknown_id, unknown = ev.raw_upsert("p-unknown-field", [ev.inline(png_bytes(48, (90, 90, 90)))],
                                            colourway="forest green")
        for n, (name, value, event_id) in enumerate([*records, ("unknown field", unknown, unknown_id)]):
            key = f"pair-{n}"
            rig.publish(name, key, value, event_id if name == "unknown field" else None)
            rig.good(f"after {name}", key, colour=(n * 20 % 255, 80, 160))
            wait_for(lambda name=name: rig.claimed(f"after {name}"), PAIR_WAIT_S, 0.1)
        goods = [f"after {name}" for name, _, _ in records] + ["after unknown field"]
        wait_for(lambda: rig.claimed(*goods, "unknown field"), 20, 0.5)
        delays = rig.delays()
        dlq = rig.dlq()
        shas = {sha for (sha,) in rig.db.rows("select sha256 from images")}
        ws.prepare_spare()
    return [_dlq_row(records, dlq), _delay_row(goods, delays, max_delay_s),
            _unknown_row(delays.get("unknown field"), dlq.get("unknown field", [])),
            _reads_row(dlq, host, redirector, ev.sha256(secret) in shas)]


def _dlq_row(records: list, dlq: dict) -> Row:
    problems = []
    good = lost = duplicated = 0
    for name, _, _ in records:
        copies = dlq.get(name, [])
        if not copies:
            lost += 1
            problems.append(f"{name}: not in DLQ")
        elif len(copies) > 1:
            duplicated += 1
            problems.append(f"{name}: {len(copies)} copies")
        elif not copies[0].header("error.reason").strip():
            problems.append(f"{name}: no error.reason")
        else:
            good += 1
    types = sorted({c.header("error.type") for copies in dlq.values() for c in copies})
    leaky = sum(1 for copies in dlq.values() for c in copies
                if any(s in c.header("error.reason") for s in ("/etc/", "127.0.0.1", socket.gethostname())))
    notes = "; ".join(problems) or "every poison record dead-lettered once, with a reason"
    return Row("poison/dlq", len(records), good, lost, duplicated, ok=good == len(records),
               notes=f"{notes}; error.type seen: {', '.join(types)}; reasons naming a server path or loopback "
               f"address: {leaky}",
               details={name: [c.header("error.reason")[:300] for c in dlq.get(name, [])] for name, _, _ in records})


def _delay_row(goods: list[str], delays: dict, max_delay_s: float) -> Row:
    never = [g for g in goods if delays.get(g) is None]
    late = [g for g in goods if delays.get(g) is not None and delays[g] > max_delay_s]
    measured = {g: d for g, d in delays.items() if g in goods and d is not None}
    worst = max(measured, key=measured.get) if measured else None
    notes = (f"max delay {measured[worst]:.2f}s ({worst})" if worst else "no good record indexed")
    if late:
        notes += f"; over {max_delay_s:g}s: " + ", ".join(f"{g} {delays[g]:.1f}s" for g in late)
    if never:
        notes += "; never indexed: " + ", ".join(never)
    return Row("poison/good records", len(goods), len(goods) - len(never) - len(late), len(never), 0,
               ok=not never and not late, notes=notes,
               details={g: None if d is None else round(d, 3) for g, d in delays.items() if g in goods})


def _unknown_row(delay: float | None, copies: list) -> Row:
    if delay is not None:
        notes = f"accepted and indexed after {delay:.2f}s"
    elif copies:
        notes = f"dead-lettered, expected accepted: {copies[0].header('error.reason')[:160]}"
    else:
        notes = "neither indexed nor dead-lettered"
    return Row("poison/unknown field", 1, int(delay is not None), int(delay is None and not copies), 0,
               ok=delay is not None, notes=notes)


def _reads_row(dlq: dict, host: ImageHost, redirector: Redirector, outside_indexed: bool) -> Row:
    etc_reason = " ".join(c.header("error.reason") for c in dlq.get("local file /etc/hostname", []))
    reads = {
        "/etc/hostname": "decod" in etc_reason.lower(),  # its bytes reached the decoder
        "image file outside the catalogue": outside_indexed,
        "loopback host": host.requests("/direct.png") > 0,
        "loopback via redirect": host.requests("/via-redirect.png") > 0,
    }
    done = [name for name, read in reads.items() if read]
    notes = (f"read: {', '.join(done)}" if done else "nothing read") + (
        f"; loopback host requests {host.requests()}, redirector requests {redirector.requests()}")
    return Row("poison/forbidden reads", len(reads), len(reads) - len(done), None, None, ok=not done, notes=notes)
