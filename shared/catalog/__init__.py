"""The catalogue in the vector store, written once for every service that writes it: indexing.py turns a
product's pictures into its points (ingest and re-indexing both use it), alias.py owns the serving alias."""
