"""Catalogue ingestion: Kafka `catalog.uploads` -> FashionNet analysis -> Qdrant + Postgres, with a DLQ.

core.py is the logic (no Kafka or gRPC imports), consumer.py the Kafka transport, events.py the wire format,
publish.py the producer side (`fashion publish DIR`), settings.py the worker's typed settings.
"""
