"""A test guest (not an example): on each event, does what its fault type
asks, so the sandbox tests can check what a Python plugin can and cannot do.
Built by build-guest-examples.sh into examples/dist/python-sandbox-probe.wasm.

- Loop: never returns (the deadline must stop it)
- Hog: allocates without bound (the memory cap must stop it)
- ReadFile / ListRoot / Env / Connect / Resolve: tries, and drops the event
  with what happened, so the test can read it
- Print: writes to stdout and stderr, then keeps the event
- anything else: keep
"""

import os
import socket

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.filter import Verdict_Drop, Verdict_Keep


def attempt(action):
    try:
        return f"allowed: {action()!r}"[:200]
    except BaseException as e:  # noqa: BLE001 - the test reads the class name
        return f"denied: {type(e).__name__}: {e}"[:200]


class Filter(exports.Filter):
    def init(self, config):
        for key, _ in config:
            raise Err(f"unknown config key {key!r}")

    def filter(self, event):
        t = event.fault_type
        if t == "Loop":
            while True:
                pass
        if t == "Hog":
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
        if t == "ReadFile":
            return Verdict_Drop(attempt(lambda: open("/etc/passwd").read(10)))
        if t == "ListRoot":
            return Verdict_Drop(attempt(lambda: os.listdir("/")))
        if t == "Env":
            return Verdict_Drop(f"env={dict(os.environ)!r}")
        if t == "Connect":
            return Verdict_Drop(attempt(lambda: socket.create_connection(("127.0.0.1", 9), timeout=1)))
        if t == "Resolve":
            return Verdict_Drop(attempt(lambda: socket.getaddrinfo("localhost", 80)))
        if t == "Print":
            print("hello from python stdout")
            import sys
            print("hello from python stderr", file=sys.stderr)
        return Verdict_Keep()
