"""What the ingest core takes and gives back: plain dataclasses, no protobuf.

events.py converts the wire format (fashion.v1.CatalogEvent in its JSON mapping) into `CatalogEvent` and
`ProductIndexed` back into its message, so the core (core.py) never sees a message class; `BatchResult` holds
one `Outcome` per record for the transport (consumer.py) to act on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.imaging import ImageSource


class EventType(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    """The catalogue's own fields of a product (its category and attributes come from the model)."""

    product_id: str
    title: str = ""
    brand: str = ""
    price: float = 0.0
    currency: str = ""
    in_stock: bool = True
    category_hint: str = ""


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    """A validated upsert (product + its pictures) or delete (only `product.product_id` counts).

    `occurred_at` (aware, UTC), when the producer said: an event older than the newest one applied to its
    product is ignored (sinks.py); without it, events apply in the order they arrive."""

    event_id: str
    type: EventType
    product: CatalogProduct
    images: tuple[ImageSource, ...] = ()
    occurred_at: datetime | None = None

    @property
    def upsert(self) -> bool:
        return self.type is EventType.UPSERT


@dataclass(frozen=True, slots=True)
class ProductIndexed:
    """What `catalog.indexed` announces once an upsert is in both stores."""

    product_id: str
    model_version: str
    images: int
    event_id: str


class Status(StrEnum):
    INDEXED = "indexed"
    DELETED = "deleted"
    DUPLICATE = "duplicate"  # already applied (claimed earlier, or a second copy in the same batch)
    STALE = "stale"  # older (occurred_at) than the event already applied to its product: ignored, not poison
    FAILED = "failed"  # poison: send to the DLQ with `reason`


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int  # position in the batch handed to `process`
    status: Status
    event_id: str = ""
    product_id: str = ""
    images: int = 0
    reason: str = ""
    error_type: str = ""
    indexed: ProductIndexed | None = None


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[Outcome]  # one per input record, same order
    model_version: str | None  # version that analysed this batch's images (None: no images analysed)
    images: int  # images analysed and written
    seconds: float

    def with_status(self, *statuses: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    @property
    def failed(self) -> list[Outcome]:
        return self.with_status(Status.FAILED)

    @property
    def indexed(self) -> list[ProductIndexed]:
        return [o.indexed for o in self.outcomes if o.indexed is not None]

    def counts(self) -> dict[str, int]:
        return dict(Counter(str(o.status) for o in self.outcomes))
