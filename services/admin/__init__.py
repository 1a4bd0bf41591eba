"""Admin service: model lifecycle over gRPC (core.py logic, server.py AdminService, promotion.py the promotion and
hot-load threads, client.py the CLI side). Admin RPCs live only here; storefront services never take an admin token.
"""
