"""One adapter per social platform, all behind `PlatformAdapter` and one error taxonomy.

Adding a platform means adding a module here and listing it in `registry.py`.
"""
