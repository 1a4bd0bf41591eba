"""Scenario `flood`: one catalogue event carrying 12 single-colour 6300x6300 PNGs inline (about 52 KB each, 39.7
megapixels each: just under the 40 MP decompression-bomb limit, so each one is a legal image).

Measured: ingest's peak resident set (VmHWM in /proc/<pid>/status) after a warm-up event and after the flood; the
growth must stay under --max-rss-growth-mb. Decoding all of them to RGB at once would hold 12 x 119 MB. A good
record with the same key follows, and its delay is reported.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from . import catalog_events as ev
from .harness import Row, Workspace, wait_for
from .rig import ingest_rig


def flood_pngs(count: int, side: int, cache: Path) -> list[bytes]:
    """`count` single-colour greyscale PNGs, each a different grey (distinct bytes: distinct images), cached."""
    from PIL import Image

    images = []
    for n in range(count):
        path = cache / f"flood-{side}-{n}.png"
        if not path.is_file():
            out = io.BytesIO()
            Image.new("L", (side, side), 40 + n * 7 % 200).save(out, format="PNG")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(out.getvalue())
        images.append(path.read_bytes())
    return images


def run(ws: Workspace, *, images: int, side: int, max_growth_mb: float) -> list[Row]:
    pngs = flood_pngs(images, side, ws.root / "flood")
    with ingest_rig(ws, "flood") as rig:
        before, rss_before = rig.service.memory_kib("VmHWM"), rig.service.memory_kib("VmRSS")
        event_id, value = ev.upsert("p-flood", pngs, title="pixel flood")
        rig.publish("flood", "flood", value, event_id)
        rig.good("after flood", "flood")
        started = time.monotonic()
        done = wait_for(lambda: rig.claimed("after flood") or not rig.service.alive, 180, 0.2)
        took = time.monotonic() - started
        after = rig.service.memory_kib("VmHWM") if rig.service.alive else None
        alive = rig.service.alive
        delays = rig.delays()
        dlq = rig.dlq()
        ws.prepare_spare()
    outcome = ("indexed" if delays.get("flood") is not None else
               f"dead-lettered ({dlq['flood'][0].header('error.reason')[:120]})" if dlq.get("flood") else "neither")
    if not alive:
        return [Row("flood/pixel", 1, 0, ok=False, notes=f"ingest died (OOM?) after {took:.0f}s; outcome {outcome}")]
    growth_mb = (after - before) / 1024 if after and before else float("nan")
    good = delays.get("after flood")
    notes = (f"peak RSS growth {growth_mb:.0f} MB (VmHWM {before / 1024:.0f} -> {after / 1024:.0f} MB, VmRSS before "
             f"{rss_before / 1024:.0f} MB); {images} x {side}x{side} PNG ({sum(map(len, pngs)) // 1024} KB): "
             f"{outcome}; "
             f"good record behind it {'not indexed' if good is None else f'after {good:.1f}s'}")
    ok = bool(done) and growth_mb < max_growth_mb
    return [Row("flood/pixel", 1, int(ok), ok=ok, notes=notes,
                details={"vmhwm_before_kib": before, "vmhwm_after_kib": after, "growth_mb": round(growth_mb, 1),
                         "good_delay_s": good})]
