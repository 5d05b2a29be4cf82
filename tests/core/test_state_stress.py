"""Concurrency and crash safety of the State Manager (slow: real processes, real fsync, real SIGKILL)."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.slow

INCREMENT = textwrap.dedent("""
    import sys, threading
    from ratchet.core.workspace import Workspace

    def bump(doc):
        counter = doc["strategies"].get("counter", {"n": 0})
        return {**doc, "strategies": {**doc["strategies"], "counter": {"n": counter["n"] + 1}}}

    def work(n):
        ws = Workspace.open(sys.argv[1])   # one manager per thread: nothing shared but the files
        for _ in range(n):
            ws.state.update("staging", bump, retries=10_000)

    threads = [threading.Thread(target=work, args=(int(sys.argv[2]),)) for _ in range(int(sys.argv[3]))]
    [t.start() for t in threads]
    [t.join() for t in threads]
""")


def counter(ws) -> int:
    return ws.state.read("staging").document["strategies"].get("counter", {"n": 0})["n"]


def test_state_stress_threads_and_processes_lose_no_update(ws):
    per_thread, threads_per_proc, procs = 40, 2, 2
    ws.state.read("staging")
    children = [subprocess.Popen([sys.executable, "-c", INCREMENT, str(ws.root), str(per_thread),
                                  str(threads_per_proc)]) for _ in range(procs)]
    from ratchet.core.workspace import Workspace

    def local():
        w = Workspace.open(ws.root)
        for _ in range(per_thread):
            w.state.update("staging", lambda d: {**d, "strategies": {
                **d["strategies"], "counter": {"n": d["strategies"].get("counter", {"n": 0})["n"] + 1}}},
                retries=10_000)

    local_threads = [threading.Thread(target=local) for _ in range(2)]
    for t in local_threads:
        t.start()
    for t in local_threads:
        t.join()
    for c in children:
        assert c.wait(timeout=240) == 0
    expected = per_thread * (threads_per_proc * procs + 2)
    assert counter(ws) == expected
    assert ws.state.read("staging").revision == expected + 1


WRITER = textwrap.dedent("""
    import sys
    from ratchet.core.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    ws.state.read("staging")  # imports and opens the store first: the kills land among the writes
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        style = ["concise", "friendly", "detailed", "formal"][i % 4]
        pad = "x" * (i % 5000)    # vary the size so a torn write would show
        ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "style": style},
                                              "strategies": {**d["strategies"], "pad": {"s": pad, "i": i}}})
""")


def test_state_stress_sigkill_never_tears_a_document(ws):
    """Writers killed at random points leave the store's staging whole, valid and writable."""
    from ratchet.core.workspace import Workspace

    rng = random.Random(7)
    ws.state.read("staging")
    last_i = -1
    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        fresh = Workspace.open(ws.root)
        doc = fresh.state.read("staging")  # a document, never a torn one
        fresh.state.validate(doc.document, "after SIGKILL")  # never schema-invalid
        fresh.state.update("staging", lambda d: d)  # and the next writer proceeds
        fresh.store.close()
        last_i = max(last_i, doc.document["strategies"].get("pad", {}).get("i", -1))
    assert last_i > 0
