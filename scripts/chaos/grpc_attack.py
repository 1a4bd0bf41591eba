"""Scenario `grpc`: malformed FindSimilar requests, then slow-URI exhaustion, against a real search process.

One process hosts ingest and search (`python -m services.cli up --target ingest,search`: Qdrant Edge admits
one process per folder); a few products are indexed through Kafka first. Each malformed request must get its
status code (search.proto: INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED). Then --attackers concurrent
FindSimilar calls with an image URI on a host that drips a byte every 3 s, each with a --attack-deadline
deadline, while grpc.health.v1 Check is called every 200 ms: every Check must answer SERVING within 1 s.
"""

from __future__ import annotations

import io
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from . import catalog_events as ev
from .harness import Database, Publisher, Row, Workspace, external_broker, service_args, wait_for
from .servers import DripHost

CHECK_EVERY_S = 0.2
CHECK_TIMEOUT_S = 3.0
HEALTH_TARGET_S = 1.0
PRODUCTS = 5


def _pixel_bomb() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (8000, 8000), 7).save(out, format="PNG")  # 64 MP, over the 40 MP limit
    return out.getvalue()


def _bad_requests(good_image: bytes) -> list[tuple[str, object, str]]:
    from fashion.v1 import common_pb2, search_pb2

    def image(**kw: object) -> object:
        return search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(**kw))

    good = common_pb2.ImageInput(data=good_image)
    return [
        ("top_k -1", search_pb2.FindSimilarRequest(image=good, top_k=-1), "INVALID_ARGUMENT"),
        ("top_k 1000", search_pb2.FindSimilarRequest(image=good, top_k=1000), "INVALID_ARGUMENT"),
        ("no query", search_pb2.FindSimilarRequest(), "INVALID_ARGUMENT"),
        ("empty image", image(data=b""), "INVALID_ARGUMENT"),
        ("garbage bytes", image(data=os.urandom(5000)), "INVALID_ARGUMENT"),
        ("unsupported uri scheme", image(uri="gopher://example.com/x.jpg"), "INVALID_ARGUMENT"),
        ("unknown product_id", search_pb2.FindSimilarRequest(product_id="no-such-product"), "NOT_FOUND"),
        ("64 MP pixel bomb", image(data=_pixel_bomb()), "RESOURCE_EXHAUSTED"),
        ("17 MiB message", image(data=b"\0" * (17 * 1024 * 1024)), "RESOURCE_EXHAUSTED"),
    ]


def _call(stub, request, timeout: float) -> tuple[str, float]:
    import grpc

    start = time.monotonic()
    try:
        stub.FindSimilar(request, timeout=timeout)
        code = "OK"
    except grpc.RpcError as exc:
        code = exc.code().name
    return code, time.monotonic() - start


class HealthProbe(threading.Thread):
    """grpc.health.v1 Check started every 200 ms on its own channel, whether or not the previous one answered:
    (latency, status or error code) per call."""

    def __init__(self, address: str) -> None:
        super().__init__(name="chaos-health", daemon=True)
        self.address = address
        self.results: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _done(self, start: float, future) -> None:
        import grpc
        from grpc_health.v1 import health_pb2

        took = time.monotonic() - start
        try:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(future.result().status)
        except grpc.RpcError as exc:
            status = exc.code().name
        with self._lock:
            self.results.append((took, status))

    def run(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            futures = []
            while not self.stop.is_set():
                start = time.monotonic()
                future = stub.Check.future(health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT_S)
                future.add_done_callback(lambda f, start=start: self._done(start, f))
                futures.append(future)
                self.stop.wait(CHECK_EVERY_S)
            deadline = time.monotonic() + CHECK_TIMEOUT_S + 1
            while time.monotonic() < deadline and not all(f.done() for f in futures):
                time.sleep(0.05)
            time.sleep(0.1)  # the last callbacks


def run(ws: Workspace, *, attackers: int, deadline_s: float, attack_s: float) -> list[Row]:
    import grpc

    from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc

    folder = ws.scenario_dir("grpc")
    pictures = ws.catalogue(40)
    products = sorted(pictures)[:PRODUCTS]
    with external_broker(folder / "broker.log") as bootstrap, Database("grpc", keep=ws.keep) as db, \
            DripHost(interval_s=3.0) as drip:
        service = ws.start(service_args("ingest,search"), ws.service_env(folder / "data", db.url, bootstrap=bootstrap),
                           folder / "stack.log")
        state = service.wait_ready()
        publisher = Publisher(bootstrap, {ev.UPLOADS_TOPIC: 3})
        ids = []
        for pid in products:
            event_id, value = ev.upsert(pid, pictures[pid][:2], title=pid)
            publisher.send(ev.UPLOADS_TOPIC, pid.encode(), value, pid)
            ids.append(event_id)
        publisher.close()
        if wait_for(lambda: set(ids) <= db.processed().keys(), 90, 0.3) is None:
            raise RuntimeError(f"the {PRODUCTS} products were not indexed within 90s; log {service.log_path}")
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        with grpc.insecure_channel(state["grpc"], options=options) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            query = search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=pictures[products[0]][-1]))
            before = _call(stub, query, 30)
            answers = [(name, expected, *_call(stub, request, 30))
                       for name, request, expected in _bad_requests(pictures[products[0]][0])]
            probe = HealthProbe(state["grpc"])
            probe.start()
            time.sleep(1.0)
            attack_start = time.monotonic()
            with ThreadPoolExecutor(attackers, thread_name_prefix="chaos-attacker") as pool:
                futures = [pool.submit(_call, stub, search_pb2.FindSimilarRequest(
                    image=common_pb2.ImageInput(uri=drip.url(f"/attack-{i}.jpg"))), deadline_s)
                    for i in range(attackers)]
                attack = [f.result() for f in futures]
            time.sleep(max(0.0, attack_s - (time.monotonic() - attack_start)))
            probe.stop.set()
            probe.join()
            during_attack = drip.connections
            drip.close()
            after = _call(stub, query, 30)
        ws.prepare_spare()
        service.terminate(30)
    return [_bad_row(answers, before), _health_row(probe.results, attack, before, after, during_attack, deadline_s)]


def _bad_row(answers: list[tuple[str, str, str, float]], before: tuple[str, float]) -> Row:
    wrong = [f"{name}: got {code} (expected {expected})" for name, expected, code, _ in answers if code != expected]
    slowest = max(answers, key=lambda a: a[3])
    notes = "; ".join(wrong) or "every malformed request got its status code"
    return Row("grpc/bad requests", len(answers), len(answers) - len(wrong), None, None, ok=not wrong,
               notes=f"{notes}; slowest answer {slowest[3]:.2f}s ({slowest[0]}); a good FindSimilar before: "
               f"{before[0]} in {before[1]:.2f}s",
               details={name: {"expected": expected, "got": code, "seconds": round(s, 3)}
                        for name, expected, code, s in answers})


def _health_row(results: list[tuple[float, str]], attack: list[tuple[str, float]], before: tuple[str, float],
                after: tuple[str, float], connections: int, deadline_s: float) -> Row:
    good = [t for t, status in results if status == "SERVING" and t <= HEALTH_TARGET_S]
    failed = [(t, s) for t, s in results if s != "SERVING"]
    worst = max((t for t, _ in results), default=float("nan"))
    codes = Counter(code for code, _ in attack)
    longest = max((t for _, t in attack), default=0.0)
    notes = (f"worst Check {worst:.2f}s{' (timed out)' if failed else ''}, median "
             f"{statistics.median(t for t, _ in results):.3f}s over {len(results)} Checks; {len(attack)} attackers "
             f"({deadline_s:g}s deadline): {', '.join(f'{n} {c}' for c, n in codes.items())}, longest {longest:.1f}s; "
             f"dripping host saw {connections} fetches; good FindSimilar before {before[1]:.2f}s, after the attack "
             f"{after[0]} in {after[1]:.2f}s")
    return Row("grpc/health under attack", len(results), len(good), len(failed), None,
               ok=len(good) == len(results) and after[0] == "OK", notes=notes,
               details={"check_latencies": [round(t, 3) for t, _ in results], "attack_codes": dict(codes)})
