"""A server (`tango-edge serve`, or any uvicorn app) started as a subprocess on a free port: for tests,
benchmarks, and users' own integration tests."""

from __future__ import annotations

import re
import signal
import subprocess
import threading

PORT_LINE = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")  # uvicorn's start-up line names the port it bound
START_SECONDS = 300


class ServerProcess:
    """Starts `command` (a server on 127.0.0.1, port 0) and waits for the port it bound; collects its stderr."""

    def __init__(self, command: list[str], env: dict | None = None, start_seconds: float = START_SECONDS):
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        self.log: list[str] = []
        self.port: int | None = None
        found = threading.Event()

        def read():
            for line in self.process.stderr:
                self.log.append(line)
                match = PORT_LINE.search(line)
                if match:
                    self.port = int(match.group(1))
                    found.set()
            found.set()  # exited before starting

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(start_seconds) or self.port is None:
            self.process.kill()
            raise RuntimeError("the server did not start:\n" + "".join(self.log[-20:]))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig` (unless it has exited) and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)
