"""One adapter per social platform, all behind `PlatformAdapter` and one error taxonomy.

One folder per platform: its adapter, its spec (`specs.py` says what a spec holds) and its
connector; adding a platform means a folder here and a line in `registry.py`.
"""
