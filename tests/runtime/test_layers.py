"""usdcm.runtime sits below training and inference: importing it pulls in neither."""

from __future__ import annotations

import subprocess
import sys


def test_runtime_imports_no_higher_layer() -> None:
    code = (
        "import sys, usdcm.runtime.device, usdcm.runtime.checkpoint, usdcm.runtime.predict\n"
        "higher = ('usdcm.training', 'usdcm.inference', 'usdcm.evaluation', 'usdcm.cli', "
        "'usdcm.config')\n"
        "print(sorted(m for m in sys.modules if m.startswith(higher)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
