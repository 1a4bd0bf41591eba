"""Serving-side model code shared by the model services, search and ingest (no gRPC/Kafka imports)."""
