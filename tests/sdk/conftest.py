"""Fixtures for driving the real tandem binary with the real Dapr SDK."""
import os
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tandem_env(tmp_path):
    """Environment for tandem commands: a private TANDEM_HOME, no tokens."""
    env = dict(os.environ)
    env["TANDEM_HOME"] = str(tmp_path / "home")
    env.pop("DAPR_API_TOKEN", None)
    env.pop("APP_API_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tandem_cmd(*args):
    return [os.environ["TANDEM_BIN"], *args]


def python_app(name, *args):
    return [sys.executable, os.path.join(APPS, name), *args]


class Background:
    """A `tandem run` in the background whose output is collected."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines = []
        import threading

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)

        self.thread = threading.Thread(target=pump, daemon=True)
        self.thread.start()

    def output(self):
        return "".join(self.lines)

    def wait_for(self, needle, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if needle in self.output():
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)
                return needle in self.output()
            time.sleep(0.05)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def background():
    started = []

    def start(args, env):
        b = Background(args, env)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
