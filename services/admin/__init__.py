"""Admin service: model lifecycle over gRPC (core.py logic, server.py AdminService, promoter.py re-index + alias
swap + rollback with reindex.py, promotion_worker.py the thread promoting accepted runs, client.py the CLI side).
Admin RPCs live only here; storefront services never take an admin token. The model watcher that hot-loads
promoted versions runs in every model process, so it lives in shared/serving/watcher.py.
"""
