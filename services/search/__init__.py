"""Search service: FindSimilar and RecordClick (core.py logic, server.py gRPC, clicks.py Kafka)."""
