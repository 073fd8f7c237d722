"""Re-taking the README screenshots (`take.py`)."""
