"""The token encryption key: a malformed `TOKEN_ENCRYPTION_KEY`
stops the app from being built, with a message that names the fix and never the key; the
generated key file is refused outside local development; processes creating the key file at
the same moment all end up with the one same key."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from dispatch.app import create_app
from models.crypto import KEY_FILE_NAME, TokenKeyError, cipher_for, local_key
from models.settings import DatabaseSettings
from tasks.cloud_tasks import InMemoryTaskQueue
from tests.support.settings import make_settings
from tests.support.stacks import WEBHOOK_SECRET

GOOD = Fernet.generate_key().decode()


def _app(**env: object) -> object:
    return create_app(
        settings=make_settings(WEBHOOK_SECRET=WEBHOOK_SECRET, **env), queue=InMemoryTaskQueue()
    )


@pytest.mark.parametrize(
    "bad",
    ["not-a-key", GOOD[:-2], f"{GOOD},short", "A" * 44 + "!", "x" * 200],
    # GOOD is generated per process: ids that do not show it are the same in every worker.
    ids=["not-a-key", "truncated", "second-key-short", "bad-alphabet", "too-long"],
)
def test_a_malformed_key_fails_create_app_without_showing_it(bad: str) -> None:
    with pytest.raises(
        TokenKeyError, match=r"TOKEN_ENCRYPTION_KEY: key .* is not a Fernet key"
    ) as e:
        _app(TOKEN_ENCRYPTION_KEY=bad, DATABASE_URL="postgresql://db.example/x")
    for part in bad.split(","):
        assert part not in str(e.value)


def test_valid_keys_and_rotation_lists_build_the_app() -> None:
    other = Fernet.generate_key().decode()
    _app(TOKEN_ENCRYPTION_KEY=f" {GOOD} , {other} ", DATABASE_URL="postgresql://db.example/x")


def test_the_generated_key_file_is_refused_outside_local_development(tmp_path: Path) -> None:
    production = {
        "DATABASE_URL": "postgresql://db.example/x",
        "TENDSOCIAL_DATA_DIR": tmp_path,
        "TOKEN_ENCRYPTION_KEY": "",
        "LOCAL_TOKEN_KEY_FILE": False,
    }
    with pytest.raises(TokenKeyError, match="TOKEN_ENCRYPTION_KEY is not set"):
        _app(**production)
    with pytest.raises(TokenKeyError):
        cipher_for(DatabaseSettings(**production))
    assert not (tmp_path / KEY_FILE_NAME).exists()
    # local development opts in (tendsocial dev), and an embedded database implies it
    cipher_for(DatabaseSettings(**(production | {"LOCAL_TOKEN_KEY_FILE": True})))
    cipher_for(DatabaseSettings(**(production | {"DATABASE_URL": None})))
    assert (tmp_path / KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600


def _race(data_dirs: list[str], start: threading.Barrier, out: multiprocessing.Queue) -> None:
    """One racer through every round: all racers start each round together (the barrier)."""
    for round_, data_dir in enumerate(data_dirs):
        start.wait()
        settings = DatabaseSettings(
            TENDSOCIAL_DATA_DIR=data_dir, LOCAL_TOKEN_KEY_FILE=True, TOKEN_ENCRYPTION_KEY=""
        )
        out.put((round_, cipher_for(settings).encrypt(b"token").decode()))


def test_processes_creating_the_key_file_at_once_share_one_key(tmp_path: Path) -> None:
    # The same racers run every round (forking a test worker is most of this test's time).
    context = multiprocessing.get_context("fork")
    rounds, racers = 5, 6
    data_dirs = [tmp_path / f"round-{round_}" for round_ in range(rounds)]
    start = context.Barrier(racers)
    out = context.Queue()
    processes = [
        context.Process(target=_race, args=([str(d) for d in data_dirs], start, out))
        for _ in range(racers)
    ]
    for process in processes:
        process.start()
    tokens: dict[int, list[str]] = {round_: [] for round_ in range(rounds)}
    for _ in range(rounds * racers):
        round_, token = out.get(timeout=60)
        tokens[round_].append(token)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for round_, data_dir in enumerate(data_dirs):
        key = Fernet((data_dir / KEY_FILE_NAME).read_bytes())
        assert {key.decrypt(t.encode()) for t in tokens[round_]} == {b"token"}
        assert [p.name for p in data_dir.iterdir()] == [KEY_FILE_NAME]  # no temporary left


def test_a_key_file_still_being_written_is_waited_for(tmp_path: Path) -> None:
    """An empty `token.key` (another process between creating and writing it, as older
    versions did) is read again until the key is there, instead of failing."""
    key_file = tmp_path / KEY_FILE_NAME
    key_file.touch(mode=0o600)
    written = threading.Event()

    def writer() -> None:
        written.wait(timeout=10)
        key_file.write_text(GOOD)

    thread = threading.Thread(target=writer)
    thread.start()
    threading.Timer(0.2, written.set).start()  # the slow writer being played
    try:
        assert local_key(tmp_path) == GOOD
    finally:
        thread.join()
