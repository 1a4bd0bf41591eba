"""Retraining from storefront clicks: a Celery worker fine-tunes FashionNet and gates it against the serving model.

``core`` holds the logic (pairs, fine-tuning, evaluation gate, trigger), ``tasks`` the thin Celery task,
``celery_app`` the app and its delivery settings, ``settings`` the FASHION_* knobs.
"""
