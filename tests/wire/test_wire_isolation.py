"""`ddnn.wire` is the bottom layer: importing it loads no other ddnn package and no torch."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_loads_no_upper_layer_and_no_torch() -> None:
    code = "import json, sys, ddnn.wire; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "ddnn.wire.frame" in loaded  # the probe really imported the package
    for upper in ("models", "eval", "runtime", "export", "train", "data", "nn", "experiments"):
        assert not any(m == f"ddnn.{upper}" or m.startswith(f"ddnn.{upper}.") for m in loaded)
    assert "torch" not in loaded
