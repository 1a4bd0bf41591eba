"""Retraining from storefront clicks: a Celery worker fine-tunes FashionNet and gates it against the serving model.

``config`` what a run trains with (torch-free), ``runs`` every read and write of the run row (trigger,
liveness, start, outcome; torch-free), ``pairs`` click pairs and their images, ``features`` the cached
backbone features, ``finetune`` the training loop, ``gate`` the evaluation against the serving model,
``pipeline`` one run's steps in order; ``trigger`` how the admin service asks for a run, ``tasks`` the
thin Celery task, ``celery_app`` the app and its delivery settings, ``settings`` the FASHION_* knobs.
"""
