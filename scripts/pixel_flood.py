"""Peak memory of ingest for one "pixel flood" event: 12 single-colour 6300x6300 PNGs (about 50 KB each,
40 megapixels each once decoded) in one catalogue event.

    PYTHONPATH=$PWD .venv/bin/python scripts/pixel_flood.py [--images 12] [--side 6300]

Runs the real `IngestCore` (the process's image intake from FASHION_* settings, a tiny untrained FashionNet on
the CPU, SQLite and Qdrant Edge in a temporary folder): one small event first, so the model and the stores
have allocated what they keep, then the flood event. Prints the process's peak RSS growth during the flood event
(getrusage) and the RSS left afterwards (/proc/self/status). The images travel inline, so the script measures
decoding, not the input policy, and runs unchanged on older revisions for a before/after comparison (put that
checkout first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
from pathlib import Path

import torch
from PIL import Image

from services.ingest.core import IncomingEvent, IngestCore
from services.ingest.events import build_upsert_event
from shared.config import ImageSettings
from shared.db import make_engine, session_factory, sqlite_url, upgrade
from shared.serving.runtime import ModelRuntime
from shared.vectorstore import open_store

MIB = 1024 * 1024


def _png(colour: int, side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (colour, 255 - colour, colour // 2)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiny_checkpoint(folder: Path) -> Path:
    from shared.data.synth import ATTRIBUTES, CATEGORIES
    from shared.fashionnet import default_metadata, save_checkpoint
    from shared.fashionnet.checkpoint import build_model
    from shared.vocabulary import Attribute, Category, ClothesType

    torch.manual_seed(0)
    meta = default_metadata("fashionnet_efficientnet_lite0",
                            [Category(c.name, ClothesType(c.clothes_type)) for c in CATEGORIES],
                            [Attribute(name, group) for name, group in ATTRIBUTES],
                            version="flood-1", embedding_dim=32, input_size=64)
    return save_checkpoint(folder / "model.pt", build_model(meta, pretrained=True).eval(), meta)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=6300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = [_png(10 + 20 * k, args.side) for k in range(args.images)]  # distinct colours: distinct image ids
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runtime = ModelRuntime(engine="eager", max_batch=32, max_wait_ms=1)
        runtime.load(_tiny_checkpoint(folder))
        url = sqlite_url(folder / "fashion.db")
        upgrade(url)
        engine = make_engine(url)
        store = open_store(folder / "qdrant")
        core = IngestCore(runtime, session_factory(engine), store, ImageSettings().image_intake())
        try:
            warm = core.process([IncomingEvent.of(build_upsert_event("warm-up", [_png(1, 256)]))])
            assert warm.counts() == {"indexed": 1}, warm.outcomes
            before_peak, before = _peak_rss(), _rss()
            flood = build_upsert_event("flood", images)
            result = core.process([IncomingEvent.of(flood, offset=1)])
            after_peak, after = _peak_rss(), _rss()
        finally:
            store.close()
            engine.dispose()
            runtime.close()
    print(f"event: {args.images} PNGs of {args.side}x{args.side} ({sum(map(len, images)) // 1024} KB), "
          f"outcome {result.counts()}")
    print(f"RSS before the event {before / MIB:.0f} MiB; peak during it {after_peak / MIB:.0f} MiB "
          f"(+{max(0, after_peak - before_peak) / MIB:.0f} MiB over the earlier peak, "
          f"+{(after_peak - before) / MIB:.0f} MiB over RSS before); RSS after it {after / MIB:.0f} MiB")


if __name__ == "__main__":
    main()
