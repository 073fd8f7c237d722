"""Google Cloud deployment files and the manifest renderer (`render.py`)."""
