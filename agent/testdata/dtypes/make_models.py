#!/usr/bin/python3
"""Builds small ONNX models that exercise every Open Inference Protocol data
type through onnxruntime. Run with Debian's python3-onnx:

    /usr/bin/python3 agent/testdata/dtypes/make_models.py

identity_all.onnx: for each type T an input "in_T" of shape [N, 3] wired
through Identity to "out_T", plus a Mul "double_fp32 = in_FP32 * 2" so a test
can tell computed outputs from echoed ones.
"""
import os
import onnx
from onnx import helper, TensorProto

TYPES = {
    "BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}

inputs, outputs, nodes = [], [], []
for name, t in TYPES.items():
    inputs.append(helper.make_tensor_value_info("in_" + name, t, ["N", 3]))
    outputs.append(helper.make_tensor_value_info("out_" + name, t, ["N", 3]))
    nodes.append(helper.make_node("Identity", ["in_" + name], ["out_" + name], name="id_" + name))
two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
nodes.append(helper.make_node("Mul", ["in_FP32", "two"], ["double_fp32"], name="double"))
outputs.append(helper.make_tensor_value_info("double_fp32", TensorProto.FLOAT, ["N", 3]))
graph = helper.make_graph(nodes, "identity_all", inputs, outputs, initializer=[two])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgefleet-testdata")
model.ir_version = 8
onnx.checker.check_model(model)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "identity_all.onnx")
onnx.save(model, out)
print("wrote", out)
