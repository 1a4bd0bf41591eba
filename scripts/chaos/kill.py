"""Scenario `kill`: the ingest process SIGKILLed at random, again and again, while catalogue events stream in.

The broker is external (a Tansu owned by the chaos process), as Kafka is in production, so what ingest did not
commit is still there for the next incarnation. The stream mixes first upserts, updates of the same products
(new title and price, new pictures, or the same content again under a new event id), deletes, re-creations
and replays of old records (the same bytes again). Each cycle publishes half of its share of the stream while
ingest is down, starts it, and kills it while it joins the group (a quarter of the cycles) or, once it has its
partitions and the other half trickles in, either at a random moment or as soon as the ledger shows a new claim
(right after a batch's database commit, before its announcements and its Kafka commit).

After the last kill, ingest runs until every event is claimed and the group's offsets reach the end of the
topic, then stops cleanly; each product in Postgres and Qdrant is compared with the last (non-replay) event
published for it, and `catalog.indexed` must announce every applied upsert at least once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from services.ingest.events import INDEXED_TOPIC, parse_indexed

from . import catalog_events as ev
from .harness import Database, Publisher, Row, Sent, Workspace, committed_offsets, external_broker, read_topic, wait_for
from .stores import Expected, judge_postgres, judge_qdrant, postgres_products, qdrant_points

INGEST = ["-m", "services.ingest"]
WHILE_JOINING, AT_RANDOM, AFTER_COMMIT = "while joining", "at a random moment", "right after a claim"
JOINED = "Setting newly assigned partitions"  # kafka-python's log line once the group gave it partitions
TRICKLE_S = 2.5  # a cycle's second half is published over this long, and the kill falls somewhere in it


@dataclass(frozen=True)
class Planned:
    tag: str
    kind: str  # create, title, pictures, revision, delete, recreate, replay
    product_id: str
    event_id: str
    value: bytes
    expect: Expected | None  # the product's state once applied; None for a replay (it must change nothing)


def plan_stream(pictures: dict[str, list[bytes]], products: int, updates: int, rng: random.Random) -> list[Planned]:
    """First upserts of `products` products interleaved with `updates` later events, in publishing order."""
    ids = sorted(pictures)[:products]
    pending = list(ids)
    rng.shuffle(pending)
    state: dict[str, Expected] = {}
    stream: list[Planned] = []
    version: Counter[str] = Counter()

    def upsert(pid: str, kind: str, shas_from: list[bytes] | None = None, same: Expected | None = None) -> None:
        if same is not None:  # the same content under a new event id (a publisher's `revision`)
            title, price, images = same.title, same.price, [p for p in pictures[pid] if ev.sha256(p) in same.shas]
        else:
            version[pid] += 1
            title, price = f"{pid} v{version[pid]}", round(rng.uniform(5, 300), 2)
            images = shas_from or rng.sample(pictures[pid], k=rng.randint(1, min(3, len(pictures[pid]))))
        event_id, value = ev.upsert(pid, images, title=title, price=price)
        want = Expected(event_id, True, title, price, frozenset(ev.sha256(p) for p in images))
        state[pid] = want
        stream.append(Planned(f"k{len(stream)}", kind, pid, event_id, value, want))

    steps = products + updates
    while len(stream) < steps:
        if pending and (rng.random() < products / steps * 1.5 or not state):
            upsert(pending.pop(), "create")
            continue
        pid = rng.choice(sorted(state))
        roll = rng.random()
        if roll < 0.15 and len(stream) > 3:
            old = rng.choice([p for p in stream if p.expect is not None])
            stream.append(Planned(f"k{len(stream)}", "replay", old.product_id, old.event_id, old.value, None))
        elif not state[pid].live:
            upsert(pid, "recreate")
        elif roll < 0.45:
            current = [p for p in pictures[pid] if ev.sha256(p) in state[pid].shas]
            upsert(pid, "title", shas_from=current)
        elif roll < 0.65:
            upsert(pid, "pictures")
        elif roll < 0.8:
            upsert(pid, "revision", same=state[pid])
        else:
            event_id, value = ev.delete(pid)
            state[pid] = Expected(event_id, False)
            stream.append(Planned(f"k{len(stream)}", "delete", pid, event_id, value, state[pid]))
    for pid in pending:  # products the random walk never reached still get created
        upsert(pid, "create")
    return stream


def _publish(publisher: Publisher, records: list[Planned], spread_s: float, rng: random.Random,
             sent: list[Sent]) -> None:
    """Publish `records` one by one at random moments over about `spread_s` seconds (at once for 0)."""
    for p in records:
        sent.append(publisher.send(ev.UPLOADS_TOPIC, p.product_id.encode(), p.value, p.tag))
        if spread_s:
            time.sleep(rng.uniform(0, 2 * spread_s / max(1, len(records))))


def _kill_moments(kills: int, rng: random.Random) -> list[str]:
    """When each cycle's SIGKILL falls: a quarter while ingest joins the group, the others half at a random moment
    of the trickle and half as soon as the ledger shows a new claim (right after a batch's database commit, before
    its announcements and offsets), in an order the seed picks."""
    joining = max(1, kills // 4)
    after_commit = (kills - joining) // 2
    plan = [WHILE_JOINING] * joining + [AFTER_COMMIT] * after_commit + [AT_RANDOM] * (kills - joining - after_commit)
    rng.shuffle(plan)
    return plan


def _claimed_count(db: Database) -> int:
    rows = db.rows("select count(*) from processed_events")  # [] before the first start created the table
    return int(rows[0][0]) if rows else 0


def _chunks(items: list[Planned], n: int) -> list[list[Planned]]:
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)] + [[] for _ in range(n)]


def run(ws: Workspace, *, kills: int, products: int, updates: int, seed: int, catchup_s: float) -> list[Row]:
    rng = random.Random(seed)
    out_dir = ws.scenario_dir("kill")
    pictures = ws.catalogue(products)
    stream = plan_stream(pictures, products, updates, rng)
    chunks = _chunks(stream, kills + 1)
    sent: list[Sent] = []
    modes: Counter[str] = Counter()
    started = time.monotonic()
    with external_broker(out_dir / "broker.log") as bootstrap, Database("kill", keep=ws.keep) as db:
        publisher = Publisher(bootstrap, {ev.UPLOADS_TOPIC: 3})
        env = ws.service_env(out_dir / "data", db.url, bootstrap=bootstrap)
        log_path = out_dir / "ingest.log"
        standby = ws.start(INGEST, env, log_path, held=True)
        plan = _kill_moments(kills, rng)
        for cycle in range(kills):
            # Half of the cycle's events wait in the topic while ingest is down; the rest trickle in while it runs.
            backlog, trickle = chunks[cycle][:len(chunks[cycle]) // 2], chunks[cycle][len(chunks[cycle]) // 2:]
            _publish(publisher, backlog, 0.0, rng, sent)
            service = standby.release()
            standby = ws.start(INGEST, env, log_path, held=True)  # the next incarnation imports meanwhile
            service.wait_ready()
            log_mark = len(service.log_text())
            modes[plan[cycle]] += 1
            if plan[cycle] == WHILE_JOINING:
                time.sleep(rng.uniform(0, 2.0))
                service.kill()
                _publish(publisher, trickle, 0.0, rng, sent)
                continue
            wait_for(lambda s=service, m=log_mark: JOINED in s.log_text()[m:], 30, 0.1)
            claimed = _claimed_count(db)
            feeder_rng = random.Random(rng.random())  # its own: the main thread keeps drawing meanwhile
            feeder = threading.Thread(target=_publish, args=(publisher, trickle, TRICKLE_S, feeder_rng, sent),
                                      daemon=True)
            feeder.start()
            if plan[cycle] == AFTER_COMMIT:  # the window between the database commit and the Kafka commit
                wait_for(lambda c=claimed: _claimed_count(db) > c, TRICKLE_S + 5, 0.01)
            else:
                time.sleep(rng.uniform(0, TRICKLE_S))
            service.kill()
            feeder.join()
        kill_phase_s = time.monotonic() - started
        # The last incarnation: publish the rest, let it catch up, stop it cleanly.
        service = standby.release()
        service.wait_ready()
        _publish(publisher, [p for c in chunks[kills:] for p in c], TRICKLE_S, rng, sent)
        publisher.close()
        distinct = {p.event_id for p in stream if p.expect is not None}
        catchup_start = time.monotonic()
        caught_up = wait_for(lambda: distinct <= db.processed().keys(), catchup_s, 0.5) is not None
        ends: dict[tuple[str, int], int] = {}
        for s in sent:
            key = (ev.UPLOADS_TOPIC, s.partition)
            ends[key] = max(ends.get(key, 0), s.offset + 1)

        def committed() -> str | None:
            offsets = committed_offsets(bootstrap, "fashion-ingest", sorted(ends))
            if offsets is None:
                return "unknown (the broker would not say)"
            return "yes" if all(offsets[k] >= v for k, v in ends.items()) else None

        offsets_ok = wait_for(committed, 30 if caught_up else 5, 0.5) or "NO"
        catchup = time.monotonic() - catchup_start
        ws.prepare_spare()
        exit_code = service.terminate()
        processed = db.processed()
        found_pg = postgres_products(db)
        dlq = read_topic(bootstrap, ev.UPLOADS_DLQ_TOPIC, idle_s=1.0)
        announced = Counter(parse_indexed(r.value).event_id for r in read_topic(bootstrap, INDEXED_TOPIC) if r.value)
    alias, collections = qdrant_points(out_dir / "data")
    expected = {p.product_id: p.expect for p in stream if p.expect is not None}
    pg = judge_postgres(expected, found_pg)
    qd = judge_qdrant(expected, found_pg, alias, collections)
    kinds = Counter(p.kind for p in stream)
    unclaimed = distinct - processed.keys()
    common = (f"{kills} SIGKILLs ({', '.join(f'{n} {m}' for m, n in modes.items())}) in {kill_phase_s:.0f}s; "
              f"{len(stream)} events ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
              f"catch-up {catchup:.0f}s{'' if caught_up else ' (TIMED OUT)'}, offsets committed to the end: "
              f"{offsets_ok}; clean stop exit {exit_code}")
    rows = []
    for store, verdict, extra in (
            ("postgres", pg, f"events never claimed: {len(unclaimed)}, DLQ records: {len(dlq)}; " + common),
            ("qdrant", qd, f"{len(collections)} collection(s), alias -> {alias}")):
        rows.append(Row(f"kill/{store}", len(expected), len(expected) - len(verdict.bad()), len(verdict.lost),
                        len(verdict.duplicated),
                        ok=not verdict.bad() and not (store == "postgres" and (unclaimed or dlq)),
                        notes=f"stale {len(verdict.stale)}; {extra}",
                        details={"lost": sorted(verdict.lost), "duplicated": sorted(verdict.duplicated),
                                 "stale": sorted(verdict.stale), "unclaimed_events": sorted(unclaimed),
                                 "dlq_reasons": [r.header("error.reason") for r in dlq][:20]}))
    applied = {p.event_id for p in stream if p.expect is not None and p.expect.live} & processed.keys()
    missing = applied - announced.keys()
    repeated = sum(1 for e in applied if announced[e] > 1)
    rows.append(Row("kill/catalog.indexed", len(applied), len(applied - missing), len(missing), repeated,
                    ok=not missing, notes=f"announcements of applied upserts; {repeated} announced more than once "
                    "(allowed: at-least-once)", details={"missing": sorted(missing)}))
    return rows
