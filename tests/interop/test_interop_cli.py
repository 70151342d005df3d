"""`run_vnnlib` (the `mdl verify --vnnlib --onnx` mode) end to end, and `mdl export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mdl_lang.cli import UsageError  # noqa: E402
from mdl_lang.interop.cli import add_export_command, run_vnnlib  # noqa: E402
from mdl_lang.interop.onnx import load_onnx  # noqa: E402
from mdl_lang.interop.vnnlib import load_property  # noqa: E402

TINY_SPEC = """\
labels Digit = {0..9}
dim B : batch
dim F = 4
type Flat = Tensor[B, F] float32 in [0, 1]
type Scores = Tensor[B, Digit] float32

interface Classifier {
  input x: Flat
  output y: Scores
}

module tiny : Classifier {
  python "tinynet:make"
  ensures robust: forall x2 within 0.05 of x (linf): argmax(self(x2)) == argmax(y)
  ensures bounded: all(y <= 100)
}
"""
TINY_MODULE = """\
import torch


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 10))
"""


def _tiny_onnx(path: Path, extra_op: str | None = None) -> Path:
    """y0 = relu(x0 - x1), y1 = 0.5: over [0, h]^2 the largest y0 is h, at x = (h, 0)."""
    initializers = {
        "w1": np.array([[1.0, -1.0]]), "b1": np.zeros(1), "w2": np.array([[1.0], [0.0]]), "b2": np.array([0.0, 0.5]),
    }
    last = "y" if extra_op is None else "z"
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], [last], transB=1),
    ]
    if extra_op is not None:
        nodes.append(helper.make_node(extra_op, ["z"], ["y"], name="last"))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in initializers.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _property(path: Path, high: float) -> Path:
    """Unsafe: y0 >= 2 * y1 = 1 (VNN-COMP style: the assertion is the violation)."""
    path.write_text(
        "; y0 reaches 1 only if the box lets x0 - x1 reach 1\n"
        + "".join(f"(declare-const {v} Real)\n" for v in ("X_0", "X_1", "Y_0", "Y_1"))
        + f"(assert (>= X_0 0))\n(assert (<= X_0 {high}))\n(assert (>= X_1 0))\n(assert (<= X_1 {high}))\n"
        + "(assert (>= Y_0 (* 2 Y_1)))\n",
        encoding="utf-8",
    )
    return path


def test_known_answers_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = _tiny_onnx(tmp_path / "tiny.onnx")
    assert run_vnnlib(_property(tmp_path / "holds.vnnlib", 0.75), network, timeout_s=20) == 0
    assert "holds (VNN-COMP: unsat)" in capsys.readouterr().out
    assert run_vnnlib(_property(tmp_path / "broken.vnnlib", 1.0), network, timeout_s=20) == 1
    out = capsys.readouterr().out
    assert "violated (VNN-COMP: sat)" in out
    assert "counterexample for broken.vnnlib: x = [1, 0]" in out


def test_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = _tiny_onnx(tmp_path / "tiny.onnx")
    assert run_vnnlib(_property(tmp_path / "broken.vnnlib", 1.0), network, timeout_s=20, format="json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "mdl-report/1" and document["vnncomp"] == "sat"
    (result,) = document["results"]
    assert result["verdict"] == "fail" and result["backend"] == "z3"
    assert result["witness"]["values"]["y"] == "[1, 0.5]"


def test_unsupported_operator_is_unknown_not_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = _tiny_onnx(tmp_path / "soft.onnx", extra_op="Softmax")
    prop = _property(tmp_path / "p.vnnlib", 1.0)
    assert run_vnnlib(prop, network) == 0
    out = capsys.readouterr().out
    assert "unknown: p.vnnlib: ONNX operator `Softmax` (node `last`) is not supported" in out
    assert run_vnnlib(prop, network, strict=True) == 1


def test_usage_errors_name_the_file(tmp_path: Path) -> None:
    network = _tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(UsageError, match=r"--vnnlib .*missing.vnnlib: no such file"):
        run_vnnlib(tmp_path / "missing.vnnlib", network)
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1)\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"bad.vnnlib:3:1: `\(` opened at 2:1 is never closed"):
        run_vnnlib(bad, network)
    wide = tmp_path / "wide.vnnlib"
    wide.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= 0 X_0 1))\n(assert (<= Y_0 0))\n",
                    encoding="utf-8")
    with pytest.raises(UsageError, match=r"declares 1 inputs and 1 outputs; .* has 2 and 2"):
        run_vnnlib(wide, network)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UsageError, match=r"--onnx .*junk.onnx: .* is not an ONNX model"):  # exit 2, not unknown
        run_vnnlib(_property(tmp_path / "p.vnnlib", 1.0), junk, strict=True)


def test_mdl_command_line_has_the_vnnlib_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mdl_lang.cli import main

    network = _tiny_onnx(tmp_path / "tiny.onnx")
    prop = _property(tmp_path / "holds.vnnlib", 0.5)
    assert main(["verify", "--vnnlib", str(prop), "--onnx", str(network), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["vnncomp"] == "unsat"
    assert main(["verify", "--onnx", str(network)]) == 2
    assert "--vnnlib and --onnx go together" in capsys.readouterr().err
    assert main(["verify", str(prop)]) == 2
    assert "verify needs spec PATHs and --module M" in capsys.readouterr().err
    assert main(["verify", "--vnnlib", str(prop), "--onnx", str(network), "--timeout", "0"]) == 2
    (tmp_path / "t.mdl").write_text(TINY_SPEC, encoding="utf-8")
    (tmp_path / "tinynet.py").write_text(TINY_MODULE, encoding="utf-8")
    exported = tmp_path / "bounded.vnnlib"
    assert main(["export", str(tmp_path / "t.mdl"), "--module", "tiny", "--vnnlib", str(exported),
                 "--clause", "bounded"]) == 0
    assert load_property(exported).input_size == 4


def _export(tmp_path: Path, *flags: str) -> int:
    (tmp_path / "t.mdl").write_text(TINY_SPEC, encoding="utf-8")
    (tmp_path / "tinynet.py").write_text(TINY_MODULE, encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_export_command(parser.add_subparsers())
    args = parser.parse_args(["export", str(tmp_path / "t.mdl"), "--module", "tiny", *flags])
    return args.handler(args)


def test_export_robustness_clause_and_module_then_verify_them(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    point = torch.tensor([0.2, 0.9, 0.5, 0.02])
    torch.save(point, tmp_path / "point.pt")
    out_onnx, out_vnnlib = tmp_path / "tiny.onnx", tmp_path / "robust.vnnlib"
    status = _export(tmp_path, "--onnx", str(out_onnx), "--vnnlib", str(out_vnnlib), "--clause", "robust",
                     "--point", str(tmp_path / "point.pt"))
    assert status == 0
    text = out_vnnlib.read_text(encoding="utf-8")
    assert "; mdl export: ensures `robust` of module `tiny`" in text
    (query,) = load_property(out_vnnlib).queries
    # The ball is cut to the input's range [0, 1].
    assert query.lower.tolist() == pytest.approx([0.15, 0.85, 0.45, 0.0])
    assert query.upper.tolist() == pytest.approx([0.25, 0.95, 0.55, 0.07])
    namespace: dict = {}
    exec(TINY_MODULE, namespace)  # the module the binding makes, to know its label at the point
    with torch.no_grad():
        label = int(namespace["make"]()(point.unsqueeze(0)).argmax())
    assert len(query.unsafe) == 9
    assert all(conjunction[0].coefficients[label] == 1.0 for conjunction in query.unsafe)
    assert load_onnx(out_onnx).input_size == 4
    capsys.readouterr()
    status = run_vnnlib(out_vnnlib, out_onnx, timeout_s=30)
    out = capsys.readouterr().out
    assert (status, "holds" if status == 0 else "violated") in ((0, "holds"), (1, "violated"))
    assert ("holds (VNN-COMP: unsat)" if status == 0 else "violated (VNN-COMP: sat)") in out


def test_export_linear_clause_needs_no_point(tmp_path: Path) -> None:
    assert _export(tmp_path, "--vnnlib", str(tmp_path / "b.vnnlib"), "--clause", "bounded") == 0
    (query,) = load_property(tmp_path / "b.vnnlib").queries
    assert query.lower.tolist() == [0.0] * 4 and query.upper.tolist() == [1.0] * 4
    # all(y <= 100) fails where some y_i > 100: ten one-constraint conjunctions (written as closures).
    assert len(query.unsafe) == 10


def test_export_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"needs --onnx OUT\.onnx, --vnnlib OUT\.vnnlib or both"):
        _export(tmp_path)
    with pytest.raises(UsageError, match="robustness clause: give the point with --point"):
        _export(tmp_path, "--vnnlib", str(tmp_path / "r.vnnlib"), "--clause", "robust")
    with pytest.raises(UsageError, match=r"has no ensures clause `nope` \(it has: robust, bounded\)"):
        _export(tmp_path, "--vnnlib", str(tmp_path / "r.vnnlib"), "--clause", "nope")


def test_export_refuses_a_point_outside_the_input_range(tmp_path: Path) -> None:
    # (1.02, ...) is no input of `tiny` (x in [0, 1]), though its ball of 0.05 meets the range.
    torch.save(torch.tensor([1.02, 0.5, 0.5, 0.5]), tmp_path / "outside.pt")
    with pytest.raises(UsageError, match=r"--point is not an input of `tiny`: element 0 is 1\.02, outside the "
                                         r"input's range \[0, 1\]"):
        _export(tmp_path, "--vnnlib", str(tmp_path / "r.vnnlib"), "--clause", "robust",
                "--point", str(tmp_path / "outside.pt"))
