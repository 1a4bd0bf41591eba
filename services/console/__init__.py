"""The web console: a small server-rendered HTTP app over the services' gRPC APIs (search, catalogue, models,
health). It never opens a store; everything it shows comes over gRPC or from the Prometheus metrics."""
