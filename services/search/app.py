"""The search deployable: FindSimilar and RecordClick over gRPC, the query log, and the click consumer that
writes `search.clicks` into Postgres."""

from __future__ import annotations

from datetime import timedelta

from services.resources import Resources
from services.search.catalogue import CatalogueBrowser
from services.search.clicks import ClickConsumer, KafkaClickSink
from services.search.core import SearchCore
from services.search.photo_janitor import PhotoJanitor
from services.search.query_log import QueryLog
from services.search.server import search_servicers
from services.search.settings import SearchSettings
from shared.config import ImageSettings
from shared.host import Closing, Components, Named


def build(settings: SearchSettings, resources: Resources, images: ImageSettings) -> Components:
    sessions, store = resources.sessions(), resources.store()  # the store first: models load its alias's version
    core = SearchCore(resources.analyzer(), sessions, store, images.public_image_intake(),
                      click_sink=KafkaClickSink(resources.producer(), settings.clicks_topic,
                                                timeout_s=settings.clicks_timeout_s),
                      max_top_k=settings.max_top_k,
                      query_log=QueryLog(sessions, max_pending=settings.log_max_pending,
                                         linger_s=settings.log_linger_ms / 1000))
    clicks = ClickConsumer(resources.bootstrap(), sessions, resources.producer(), topic=settings.clicks_topic,
                           dlq_topic=settings.clicks_dlq_topic, group_id=settings.clicks_group,
                           partitions=resources.settings.kafka.kafka_partitions)
    janitor = PhotoJanitor(sessions, unclicked_retention=timedelta(hours=settings.photo_unclicked_retention_h),
                           clicked_retention=timedelta(days=settings.photo_retention_days),
                           max_total_bytes=int(settings.photo_max_gib * 2**30),
                           interval_s=settings.photo_janitor_interval_s)
    # Stopped in reverse: the consumer first, then the core stores the queries answered before the drain.
    catalogue = CatalogueBrowser(sessions, images.image_intake())  # ListProducts, GetImage: the web console's
    return Components(servicers=list(search_servicers(core, default_top_k=settings.default_top_k,
                                                      catalogue=catalogue)),
                      parts=[Named("search core", Closing(core.close)), Named("click consumer", clicks),
                             Named("photo janitor", janitor)])
