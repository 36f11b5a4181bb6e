"""The shipped fixtures: current with tools/make_fixtures.py, and each pruned exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from conftest import prune_exact

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_fixtures  # noqa: E402

FLOAT_FIXTURES = [n for n in make_fixtures.FIXTURES if not n.endswith("_qdq")]

# channels the zero criterion must remove in each fixture (worked out by hand from the zeroed
# filters in tools/make_fixtures.py; see the comments there)
EXPECTED_REMOVED = {
    "residual": 17,
    "residual_qdq": 17,
    # y: 1, 6 (zero through the depthwise convs, balanced 2 + 2 positions in the grouped conv;
    # 3 goes back for that balance), grouped conv: 0 and 4, ConvTranspose: 2
    "family_conv": 5,
}


@pytest.mark.parametrize("name", FLOAT_FIXTURES)
def test_fixture_is_current(name: str) -> None:
    assert make_fixtures.FIXTURES[name]().SerializeToString() == (ROOT / "fixtures" / f"{name}.onnx").read_bytes()


@pytest.mark.parametrize("name", list(make_fixtures.CUSTOM_OP_FIXTURES))
def test_custom_op_fixture_is_current(name: str) -> None:
    """Those with a custom op (pruned with fixtures/custom_rules.py: tests/test_extension_loading.py)."""
    make = make_fixtures.CUSTOM_OP_FIXTURES[name]
    assert make().SerializeToString() == (ROOT / "fixtures" / f"{name}.onnx").read_bytes()


@pytest.mark.parametrize("name", list(make_fixtures.FIXTURES))
def test_fixture_pruned_exactly(name: str) -> None:
    model = onnx.load(ROOT / "fixtures" / f"{name}.onnx")
    r = prune_exact(model)
    assert r.report.channels_removed > 0
    assert r.report.macs_after < r.report.macs_before
    if name in EXPECTED_REMOVED:
        assert r.report.channels_removed == EXPECTED_REMOVED[name]


@pytest.mark.parametrize("name", ["residual", "residual_qdq", "shuffle", "yolo_like", "family_conv", "family_gemm"])
def test_unverified_removal_built_in_place_is_exact(name: str) -> None:
    """Without verification the result is built inside the loaded model (no second copy of
    the weights); it must be the same model in all but layout."""
    from conftest import assert_same_outputs

    import onnxprune

    path = ROOT / "fixtures" / f"{name}.onnx"
    before = path.read_bytes()
    r = onnxprune.prune(path, verify=False)
    onnx.checker.check_model(r.model, full_check=True)
    assert_same_outputs(onnx.load(path), r.model)
    verified = onnxprune.prune(path)
    assert r.report.channels_removed == verified.report.channels_removed
    assert r.report.params_after == verified.report.params_after
    assert sorted(i.name for i in r.model.graph.initializer) == sorted(i.name for i in verified.model.graph.initializer)
    assert path.read_bytes() == before
