"""The serving alias has one owner: promotion moves it, everyone else only reads it.

`move_serving_alias` is the promoter's (services/admin/promoter.py), which first makes sure the version is loaded
wherever search runs. The one other write is the very first alias: `serving_version`, called by whoever indexes
into a store that has none yet (ingest, on a fresh `fashion up` + `fashion publish`), creates it for the
analyzer's default model, so the first catalogue needs no manual promotion.
"""

from __future__ import annotations

import logging

from shared.serving.analyzer import Analyzer
from shared.vectorstore import VectorStore

log = logging.getLogger(__name__)


def serving_version(store: VectorStore, analyzer: Analyzer) -> str:
    """The version behind the serving alias; before the first one, its collection for the analyzer's default
    model, created, with the alias pointed at it."""
    version = store.alias_target()
    if version is not None:
        return version
    model = analyzer.get()
    store.ensure_collection(model.version, int(model.metadata.embedding_dim))
    version = store.alias_target()  # looked again: a promotion may have set it while the collection was made
    if version is not None:
        return version
    store.set_alias(model.version)
    log.info("no serving collection yet: created one for model %s", model.version)
    return model.version


def move_serving_alias(store: VectorStore, version: str) -> None:
    """Point the serving alias at `version`'s collection (atomic). Only a promotion calls this, once the version
    is loaded wherever search embeds queries: search reads the alias once per query and embeds with its version."""
    store.set_alias(version)
