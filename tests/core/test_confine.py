"""confine: writes outside the allowed folders are refused inside a confined block, in threads it starts and
in work it hands to a thread pool; code outside the block is unaffected; the documented limits hold."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ratchet.core.confine import confined


@pytest.fixture
def roots(tmp_path):
    allowed = tmp_path / "state"
    allowed.mkdir()
    return allowed, tmp_path / "outside.txt"


def write(path) -> BaseException | None:
    try:
        path.write_text("x")
    except BaseException as exc:  # noqa: BLE001 -- the caller asserts on it
        return exc
    return None


def in_thread(fn) -> BaseException | None:
    out: list[BaseException | None] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_confined_refuses_writes_outside_and_allows_inside(roots):
    allowed, outside = roots
    with confined(allowed):
        assert write(allowed / "ok.json") is None
        assert isinstance(write(outside), PermissionError)
    assert not outside.exists() and write(outside) is None  # the block is over


def test_confined_refuses_renaming_deleting_and_making_folders_outside(roots, tmp_path):
    import os
    import shutil

    allowed, outside = roots
    outside.write_text("keep")
    with confined(allowed):
        for attempt in (lambda: os.remove(outside), lambda: os.rename(outside, allowed / "moved"),
                        lambda: os.rename(allowed, tmp_path / "elsewhere"), lambda: os.mkdir(tmp_path / "new"),
                        lambda: shutil.rmtree(tmp_path), lambda: os.chmod(outside, 0o777)):
            with pytest.raises(PermissionError):
                attempt()
    assert outside.read_text() == "keep" and not (tmp_path / "new").exists()


def test_confined_thread_started_inside_is_confined(roots):
    """Issue 12: a thread started inside the block ran with an empty context, so it could write anywhere."""
    allowed, outside = roots
    with confined(allowed):
        refused = in_thread(lambda: write(outside))
        assert in_thread(lambda: write(allowed / "ok.json")) is None
        nested = in_thread(lambda: in_thread(lambda: write(outside)))  # a thread's thread too
    assert isinstance(refused, PermissionError) and str(allowed) in str(refused)
    assert isinstance(nested, PermissionError)
    assert not outside.exists()


def test_confined_leaves_a_thread_started_outside_alone(roots):
    allowed, outside = roots
    go, done = threading.Event(), threading.Event()
    result: list[BaseException | None] = []

    def worker():
        go.wait(10)
        result.append(write(outside))
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with confined(allowed):
        go.set()  # it writes while this thread is confined
        assert done.wait(10)
    thread.join()
    assert result == [None] and outside.exists()


def test_confined_work_follows_the_submitter_not_the_pool_thread(roots):
    allowed, outside = roots
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(write, allowed / "warm.json").result() is None  # the worker starts unconfined
        with confined(allowed):
            refused = pool.submit(write, outside).result()
        assert isinstance(refused, PermissionError)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with confined(allowed):  # the worker starts confined ...
            assert isinstance(pool.submit(write, outside).result(), PermissionError)
        assert pool.submit(write, outside).result() is None  # ... and later work from outside is not
    assert outside.exists()


def test_confined_refuses_starting_a_process(roots):
    import subprocess
    import sys

    allowed, _ = roots
    with confined(allowed), pytest.raises(PermissionError, match="starting a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_confine_is_a_mistake_guard_not_a_sandbox(roots, tmp_path):
    """What the docs say confine does not cover: reading, the network, code that writes without Python's
    audit events (sqlite3, ctypes), and threads started with _thread rather than threading."""
    import _thread
    import ctypes
    import ctypes.util
    import socket
    import sqlite3

    allowed, _ = roots
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))  # find_library starts a process: outside the block
    with confined(allowed):
        assert secret.read_text() == "s3cret"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            assert udp.sendto(b"x", ("127.0.0.1", 9)) == 1
        db = sqlite3.connect(":memory:")
        db.execute(f"ATTACH DATABASE '{tmp_path / 'attached.db'}' AS a")
        db.execute("CREATE TABLE a.t (x)")
        db.close()
        fd = libc.open(str(tmp_path / "via-ctypes.txt").encode(), 0o1 | 0o100, 0o644)  # O_WRONLY | O_CREAT
        libc.close(fd)
        done = threading.Event()
        _thread.start_new_thread(lambda: (write(tmp_path / "via-thread.txt"), done.set()), ())  # not threading
        assert done.wait(10)
    assert all((tmp_path / name).exists() for name in ("attached.db", "via-ctypes.txt", "via-thread.txt"))
