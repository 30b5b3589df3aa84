"""Process-wide settings the server applies after start-up."""

from __future__ import annotations

import json
import subprocess
import sys

from bastion.server.settings import YOUNG_GC_THRESHOLD


def test_settle_heap_freezes_start_up_objects_and_spaces_young_collections() -> None:
    # in a process of its own: the test runner's collector stays as it is
    script = ("import gc, json; from bastion.server.settings import settle_heap; before = gc.get_threshold(); "
              "settle_heap(); print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))")
    before, after, frozen = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                                      capture_output=True, text=True).stdout)
    assert after == [YOUNG_GC_THRESHOLD, before[1], before[2]] and before[0] < YOUNG_GC_THRESHOLD
    assert frozen > 1000  # the modules' objects, out of the collector's sight
