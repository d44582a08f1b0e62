#!/usr/bin/python3
"""Builds the bad versions of the digits CNN that the fleet rollout tests
push through the hub. Run with Debian's python3-onnx:

    /usr/bin/python3 agent/testdata/fleet/make_models.py

Both keep the CNN's contract (input "input" FP32 [N, 1, 8, 8], output
"logits" FP32 [N, 10]) and pass a golden vector computed from themselves:

cnn_nan.onnx   logits + 0 * sqrt(p0 - 1/64), p0 the top-left pixel: NaN for
               every real digit (their top-left pixel is 0), correct logits
               when p0 >= 1/64 (the tests' golden input sets it to 0.5)
cnn_slow.onnx  the mean of the CNN run three times, on the input scaled by
               1, 1 + 2^-20 and 1 - 2^-20 (different inputs, so onnxruntime
               cannot merge the three copies): the same answers, about 3x
               the compute
"""
import os
import onnx
from onnx import helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
CNN = os.path.join(HERE, "..", "digits", "cnn.onnx")


def const(name, vals, dims=None, dtype=TensorProto.FLOAT):
    return helper.make_tensor(name, dtype, dims if dims is not None else [], vals)


def save(model, name):
    onnx.checker.check_model(model)
    out = os.path.join(HERE, name + ".onnx")
    onnx.save(model, out)
    print("wrote", out)


def nan_model():
    m = onnx.load(CNN)
    g = m.graph
    # Rename the CNN's output, then add the NaN trap to it.
    for n in g.node:
        n.output[:] = ["cnn_logits" if o == "logits" else o for o in n.output]
    g.initializer.extend([
        const("starts", [0, 0, 0, 0], [4], TensorProto.INT64),
        const("ends", [1, 1, 1, 1], [4], TensorProto.INT64),
        const("axes", [0, 1, 2, 3], [4], TensorProto.INT64),
        const("floor", [1.0 / 64]),
        const("zero", [0.0]),
    ])
    g.node.extend([
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["p0"], name="nan/p0"),
        helper.make_node("Sub", ["p0", "floor"], ["p0_shift"], name="nan/shift"),
        helper.make_node("Sqrt", ["p0_shift"], ["p0_sqrt"], name="nan/sqrt"),
        helper.make_node("Mul", ["p0_sqrt", "zero"], ["p0_zero"], name="nan/zero"),
        helper.make_node("Flatten", ["p0_zero"], ["trap"], axis=1, name="nan/flatten"),
        helper.make_node("Add", ["cnn_logits", "trap"], ["logits"], name="nan/add"),
    ])
    save(m, "cnn_nan")


def slow_model(copies=3):
    m = onnx.load(CNN)
    g = m.graph
    body = list(g.node)
    del g.node[:]
    scales = [1.0, 1.0 + 2.0 ** -20, 1.0 - 2.0 ** -20][:copies]
    outs = []
    for k, s in enumerate(scales):
        src = "input"
        if k > 0:
            g.initializer.append(const("scale_%d" % k, [s]))
            g.node.append(helper.make_node("Mul", ["input", "scale_%d" % k], ["input_%d" % k], name="copy%d/scale" % k))
            src = "input_%d" % k
        inits = {i.name for i in g.initializer}
        rename = lambda t: t if t in inits else ("input_%d" % k if t == "input" and k > 0 else
                                                 t if t == "input" else "copy%d/%s" % (k, t))
        for n in body:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = "copy%d/%s" % (k, n.name)
            c.input[:] = [rename(t) for t in n.input]
            c.output[:] = ["copy%d/%s" % (k, t) for t in n.output]
            g.node.append(c)
        outs.append("copy%d/logits" % k)
    g.initializer.append(const("third", [1.0 / copies]))
    g.node.append(helper.make_node("Sum", outs, ["logits_sum"], name="mean/sum"))
    g.node.append(helper.make_node("Mul", ["logits_sum", "third"], ["logits"], name="mean/scale"))
    save(m, "cnn_slow")


nan_model()
slow_model()
