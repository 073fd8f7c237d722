"""One adapter per social platform, all behind `PlatformAdapter` and one error taxonomy.

One folder per platform: its spec (its facts with their sources; `specs.py` says what a spec
holds), its adapter and its connector. Adding a platform means a folder here and a line in
`registry.py` (docs/adding-a-platform.md).
"""
