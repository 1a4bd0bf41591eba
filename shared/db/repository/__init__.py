"""Repository functions: each takes a Session and never commits (the caller owns the transaction)::

    with factory.begin() as session:
        if repository.claim_event(session, event_id, topic, partition, offset):
            repository.upsert_product(session, product_id, title=title, price=price)

Split by aggregate: catalog (products, images, predictions), events (idempotency ledger), outbox (the
catalog.indexed announcements to send), search_log (queries, impressions, clicks, training pairs), registry
(model versions), runs (training runs), browse (the catalogue a page at a time, for people).
"""

from shared.db.repository.browse import find_products, get_image, predictions_for
from shared.db.repository.catalog import (
    catalog_images_page,
    count_catalog_images,
    delete_images_except,
    get_images_for_products,
    get_predictions,
    get_product,
    get_product_images,
    get_products,
    lock_products,
    mark_product_deleted,
    products_changed_since,
    save_predictions,
    save_predictions_many,
    upsert_image,
    upsert_images,
    upsert_images_many,
    upsert_product,
    upsert_products,
)
from shared.db.repository.events import claim_event, claim_events
from shared.db.repository.outbox import add_announcements, mark_announced, pending_announcements, purge_announced
from shared.db.repository.registry import (
    get_model_version,
    list_model_versions,
    previous_serving_version,
    register_model_version,
    serving_version,
    set_model_state,
    set_serving,
    stopped_serving_at,
)
from shared.db.repository.runs import (
    IllegalRunTransition,
    active_run,
    create_or_get_active_run,
    get_run,
    is_stalled,
    list_runs,
    move_run,
    runs_in_state,
    silent_for,
    update_run,
)
from shared.db.repository.search_log import (
    ClickPair,
    PhotoExpiry,
    QueryLogEntry,
    click_training_pairs,
    expire_query_photos,
    get_query,
    query_impressions,
    record_click,
    record_queries,
    record_query,
    validate_click,
)

__all__ = [
    "find_products",
    "get_image",
    "predictions_for",
    "ClickPair",
    "IllegalRunTransition",
    "PhotoExpiry",
    "QueryLogEntry",
    "active_run",
    "add_announcements",
    "catalog_images_page",
    "claim_event",
    "claim_events",
    "click_training_pairs",
    "expire_query_photos",
    "count_catalog_images",
    "delete_images_except",
    "create_or_get_active_run",
    "get_images_for_products",
    "get_model_version",
    "get_predictions",
    "get_product",
    "get_product_images",
    "get_products",
    "get_query",
    "get_run",
    "is_stalled",
    "list_model_versions",
    "list_runs",
    "lock_products",
    "mark_announced",
    "mark_product_deleted",
    "move_run",
    "pending_announcements",
    "previous_serving_version",
    "products_changed_since",
    "purge_announced",
    "query_impressions",
    "record_click",
    "record_queries",
    "record_query",
    "register_model_version",
    "runs_in_state",
    "save_predictions",
    "save_predictions_many",
    "serving_version",
    "set_model_state",
    "set_serving",
    "silent_for",
    "stopped_serving_at",
    "update_run",
    "upsert_image",
    "upsert_images",
    "upsert_images_many",
    "upsert_product",
    "upsert_products",
    "validate_click",
]
