"""Let the test run keep compiled modules, whatever `PYTHONDONTWRITEBYTECODE` says.

Loaded first (`-p tests.support.bytecode` in pyproject's pytest `addopts`), before any test module
or project module is imported. With that variable set (as some CI images and sandboxes do),
every run compiled every module again and pytest rewrote every test module's asserts again: about
10 s of each xdist worker's start in the fast lane. The caches are `__pycache__` folders, which
git ignores; the variable still applies to everything outside the test run.
"""

import sys

sys.dont_write_bytecode = False
