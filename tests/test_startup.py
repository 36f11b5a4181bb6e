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


def test_public_functions_are_not_shadowed_by_submodules() -> None:
    """Importing a submodule binds its name on the package: no module may be named like a
    public function (onnxprune.verify was the verify module once verification had run)."""
    import importlib
    import pkgutil
    import types

    import onnxprune

    for info in pkgutil.walk_packages(onnxprune.__path__, "onnxprune."):
        if not info.name.endswith("__main__"):  # that one runs the command line
            importlib.import_module(info.name)
    for name in ("prune", "analyze", "plan", "apply", "verify", "load", "save", "sensitivity"):
        value = getattr(onnxprune, name)
        assert callable(value) and not isinstance(value, types.ModuleType), name
