#!/usr/bin/python3
"""Builds the tiny ONNX models the OTA update tests roll out. Run with
Debian's python3-onnx:

    /usr/bin/python3 agent/testdata/update/make_models.py

Every model has one input "x" (FP32, [N, 4]) and one output "y" (FP32, [N, 4]):

scale2.onnx   y = 2x                         a healthy version
scale3.onnx   y = 3x                         a healthy newer version
nan4.onnx     y = 4x + 0*sqrt(x)             passes a golden vector with x >= 0,
                                             emits NaN for any negative input
err5.onnx     y = Reshape(5x, [-1, 4 + 1000003*(max(x) > 100)])
                                             passes a golden vector with small x,
                                             fails at run time when max(x) > 100
"""
import os
import onnx
from onnx import helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))


def const(name, dtype, dims, vals):
    return helper.make_tensor(name, dtype, dims, vals)


def save(name, nodes, inits):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edgefleet-testdata")
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = os.path.join(HERE, name + ".onnx")
    onnx.save(model, out)
    print("wrote", out)


def scale(k):
    return [helper.make_node("Mul", ["x", "k"], ["y"], name="scale")], [const("k", TensorProto.FLOAT, [], [float(k)])]


save("scale2", *scale(2))
save("scale3", *scale(3))

save("nan4", [
    helper.make_node("Mul", ["x", "four"], ["x4"], name="scale"),
    helper.make_node("Sqrt", ["x"], ["sq"], name="sqrt"),
    helper.make_node("Mul", ["sq", "zero"], ["z"], name="zero_out"),
    helper.make_node("Add", ["x4", "z"], ["y"], name="add"),
], [const("four", TensorProto.FLOAT, [], [4.0]), const("zero", TensorProto.FLOAT, [], [0.0])])

save("err5", [
    helper.make_node("Mul", ["x", "five"], ["x5"], name="scale"),
    helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0, name="max"),
    helper.make_node("Greater", ["mx", "limit"], ["big"], name="big"),
    helper.make_node("Cast", ["big"], ["bigi"], to=TensorProto.INT64, name="cast"),
    helper.make_node("Mul", ["bigi", "bad"], ["extra"], name="extra"),
    helper.make_node("Add", ["base", "extra"], ["shape"], name="shape"),
    helper.make_node("Reshape", ["x5", "shape"], ["y"], name="reshape"),
], [const("five", TensorProto.FLOAT, [], [5.0]), const("limit", TensorProto.FLOAT, [], [100.0]),
    const("bad", TensorProto.INT64, [2], [0, 1000003]), const("base", TensorProto.INT64, [2], [-1, 4])])
