"""Content validation under hostile text: what one schedule request can cost the event loop
every company shares (a 70 KB `@.` x 35000 body once cost 150-180 ms of API time per
rejected request).

For each hostile 70 KB shape and each platform, the time of one `validate_content` call as
counted now (regex passes, `tasks/platforms/text_limits.py`) and as counted before, one
grapheme cluster and one character at a time in Python (`tests/support/text_reference.py`, the
rule written literally; the tests hold the two equal); then a request naming 20 X accounts
with the same text, checked once per distinct (platform, limit, text) now, 20 times before.
Best of `--repeat` runs, milliseconds.

Usage: .venv/bin/python bench/bench_validation.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tasks.platforms import text_limits  # noqa: E402
from tasks.platforms.registry import PLATFORMS  # noqa: E402
from tests.support import text_reference  # noqa: E402

SHAPES = {
    "'a' x 70000": "a" * 70_000,
    "'@.' x 35000": "@." * 35_000,
    "'漢' x 70000": "漢" * 70_000,
    "emoji x 35000": "\U0001f600" * 35_000,
    "'#t ' x 23333": "#t " * 23_333,
}


def best_ms(call: Callable[[], object], *, repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return min(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat

    print(f"one validate_content call, ms (best of {repeat}): now / before")
    print(f"{'text':<16}" + "".join(f"{p:>18}" for p in PLATFORMS))
    worst_now = worst_before = 0.0
    for name, text in SHAPES.items():
        cells = []
        for platform in PLATFORMS:

            def call(platform: str = platform, text: str = text) -> object:
                return text_limits.validate_content(platform, text, media_count=1)

            now = best_ms(call, repeat=repeat)
            with text_reference.literal_rules():
                before = best_ms(call, repeat=repeat)
            worst_now, worst_before = max(worst_now, now), max(worst_before, before)
            cells.append(f"{now:7.1f} / {before:7.1f}")
        print(f"{name:<16}" + "".join(f"{c:>18}" for c in cells))
    print(f"worst single call: now {worst_now:.1f} ms, before {worst_before:.1f} ms")

    # A schedule request naming 20 X accounts with one hostile text.
    text = SHAPES["emoji x 35000"]

    def twenty_checks() -> object:
        return [text_limits.validate_content("x", text, media_count=0) for _ in range(20)]

    def one_check() -> object:
        return text_limits.validate_content("x", text, media_count=0)

    with text_reference.literal_rules():
        before = best_ms(twenty_checks, repeat=repeat)
    now = best_ms(one_check, repeat=repeat)
    print(
        "20 X targets, emoji x 35000: now (checked once) "
        f"{now:.1f} ms, before (checked per target, per-character rules) {before:.1f} ms, "
        f"{before / now:.0f}x"
    )


if __name__ == "__main__":
    main()
