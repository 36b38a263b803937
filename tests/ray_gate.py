"""A CascadePredictor that stops at a chosen line until the test releases it: the fault test kills the actor
while it holds that batch. Shipped to Ray workers by value (they cannot import tests/)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tango_edge.ray import CascadePredictor

GATE_TIMEOUT_S = 60  # a bound, so a broken test cannot hang CI


class GatedPredictor(CascadePredictor):
    def __init__(self, models, *, gate_dir: str, gate_line: int, **kwargs):
        super().__init__(models, **kwargs)
        self.gate = Path(gate_dir)
        self.gate_line = gate_line

    def __call__(self, batch):
        indexes = batch.column("index").to_pylist()
        if self.gate_line in indexes and not (self.gate / "released").exists():
            (self.gate / f"holding.{os.getpid()}.tmp").write_text(str(os.getpid()))
            os.replace(self.gate / f"holding.{os.getpid()}.tmp", self.gate / "holding")  # atomic: the test reads a whole pid
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while not (self.gate / "released").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # waiting on the test's signal (or on being killed), not standing in for it
        return super().__call__(batch)
