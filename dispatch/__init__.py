"""The HTTP edge (FastAPI): the company API (`posts_api`, `analytics_api`, `accounts_api`), the
job webhooks Cloud Tasks and Cloud Scheduler call (`jobs`), caller and company authentication,
one JSON error shape, typed dependencies (`deps`) and the composition root (`app`). Routes are
thin shells over the use cases below.

May import `flows`, `tasks` and `models`.
"""
