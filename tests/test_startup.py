"""`onnxprune --help` stays fast: the CLI module loads no heavy library (the time itself is
measured in benchmarks/, not here)."""

from __future__ import annotations

import subprocess
import sys


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, onnxprune.cli\n"
        "try:\n    onnxprune.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'openvino', 'numpy', 'onnx_graphsurgeon', 'matplotlib', 'scipy') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_lazy_package_attributes() -> None:
    import onnxprune

    assert callable(onnxprune.prune) and issubclass(onnxprune.LoadError, onnxprune.OnnxPruneError)
    assert set(onnxprune.__all__) <= set(dir(onnxprune)) | {"__version__"}
