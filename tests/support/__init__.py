"""Test and benchmark support: plain modules (not conftests) that tests and `bench/` import."""
