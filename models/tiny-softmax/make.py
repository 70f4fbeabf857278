"""Builds models/tiny-softmax/model.onnx: the smallest real graph we use to prove that ONNX Runtime loads.

    probs = Softmax(X @ W + B, axis=-1)      X: float32[batch, 4]  ->  probs: float32[batch, 3]
    logits = X @ W + B                       (second output, so tests can check both)

W and B are fixed, written below and duplicated in edge-node/tests/ort_runtime.rs, which recomputes the
expected outputs in plain Rust and compares them with what ONNX Runtime returns.

Re-create with:  python3 -m pip install onnx==1.23.2 && python3 models/tiny-softmax/make.py
"""

import pathlib

import onnx
from onnx import TensorProto, helper

W = [
    [0.5, -1.0, 0.25],
    [1.5, 0.0, -0.5],
    [-2.0, 0.75, 1.0],
    [0.125, 2.0, -1.25],
]
B = [0.1, -0.2, 0.3]


def main() -> None:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], [v for row in W for v in row])
    b = helper.make_tensor("B", TensorProto.FLOAT, [3], B)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["X", "W", "B"], ["logits"], name="gemm"),
            helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        ],
        "tiny_softmax",
        [x],
        [logits, probs],
        initializer=[w, b],
    )
    # opset 17 and IR 8 load on every ONNX Runtime from 1.14 on.
    model = helper.make_model(
        graph,
        producer_name="r1-hybrid/models/tiny-softmax/make.py",
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = pathlib.Path(__file__).with_name("model.onnx")
    onnx.save(model, out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
