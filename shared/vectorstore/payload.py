"""The payload every catalogue point carries: one definition for ingest and for re-indexing.

Search filters on these fields in Qdrant (category, attributes, price, in_stock) and shows the rest, so
the two writers must never drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def product_payload(*, category: str | None, attributes: Sequence[str], price: float | None, in_stock: bool,
                    title: str, brand: str | None, currency: str | None, image_uri: str | None) -> dict[str, Any]:
    return {"category": category, "attributes": list(attributes), "price": float(price or 0.0),
            "in_stock": bool(in_stock), "title": title, "brand": brand or "", "currency": currency or "",
            "image_uri": image_uri or ""}
