"""Units of work shared by flows and webhooks: publish one target, fetch one account's metrics.

May import `models` only.
"""
