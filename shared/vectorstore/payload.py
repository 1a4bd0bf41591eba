"""The payload every catalogue point carries: one typed definition for its writers and its reader.

Ingest and re-indexing write it (shared/catalog/indexing.py builds the points of both); search filters on these
fields in Qdrant (category, attributes, price, in_stock) and shows the rest from them without reading the
database, so writers and reader must never drift apart. The store adds `product_id`, `image_id` and
`model_version` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ProductPayload:
    """What a catalogue point says about its product (and, in `image_uri`, about its picture).

    Stored with "" for a missing brand, currency or uri and 0.0 for a missing price (Qdrant's payload indexes
    want one type per field); read back, empty strings are None again.
    """

    title: str
    category: str | None = None
    attributes: tuple[str, ...] = ()
    price: float | None = None
    in_stock: bool = True
    brand: str | None = None
    currency: str | None = None
    image_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "attributes": list(self.attributes), "price": float(self.price or 0.0),
                "in_stock": bool(self.in_stock), "title": self.title, "brand": self.brand or "",
                "currency": self.currency or "", "image_uri": self.image_uri or ""}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ProductPayload:
        """A stored payload (extra keys, such as the store's own, are ignored)."""
        price = payload.get("price")
        return cls(title=payload.get("title") or "", category=payload.get("category") or None,
                   attributes=tuple(payload.get("attributes") or ()), price=None if price is None else float(price),
                   in_stock=bool(payload.get("in_stock", True)), brand=payload.get("brand") or None,
                   currency=payload.get("currency") or None, image_uri=payload.get("image_uri") or None)
