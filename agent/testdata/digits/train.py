#!/usr/bin/python3
"""Train the two digits fixture models (a CNN and a small transformer) and export them to ONNX.

Data: scikit-learn's digits set as Debian's python3-sklearn ships it
(/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz): 1797 rows of 64 pixel values
0..16 followed by the label 0..9.

Run with Debian's interpreter (python3-torch 1.13, python3-onnx 1.12, python3-sklearn):

    /usr/bin/python3 agent/testdata/digits/train.py

It writes, next to itself: cnn.onnx, transformer.onnx, test.csv, calib.csv and meta.json.
The run is deterministic (fixed seeds, 2 intra-op threads, deterministic algorithms): running it again
on the same package versions gives the same splits and the same accuracies.

Model contract (both models):
    input  "input"  FP32 [batch, 1, 8, 8]  pixel values divided by 16.0 (so 0.0 .. 1.0)
    output "logits" FP32 [batch, 10]       unnormalised class scores; the prediction is argmax
The batch dimension is dynamic.
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
DIGITS_CSV = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
SEED = 20240601
TEST_ROWS = 360
CALIB_ROWS = 200
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_digits(path):
    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if raw.shape != (1797, 65):
        sys.exit(f"unexpected digits.csv.gz shape {raw.shape}, want (1797, 65)")
    pixels, labels = raw[:, :64], raw[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        sys.exit("digits.csv.gz values out of range")
    return pixels, labels


def split(pixels, labels):
    """Stratified, disjoint train / calibration / test split with a fixed seed."""
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=TEST_ROWS, stratify=labels, random_state=SEED)
    train, calib = train_test_split(rest, test_size=CALIB_ROWS, stratify=labels[rest], random_state=SEED + 1)
    return np.sort(train), np.sort(calib), np.sort(test)


def to_input(pixels):
    """Raw 0..16 pixels [N, 64] to the model input: FP32 [N, 1, 8, 8] scaled by 1/16."""
    return torch.from_numpy(pixels.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)


def write_csv(path, pixels, labels):
    with open(path, "w", newline="\n") as f:
        f.write("label," + ",".join(f"p{i}" for i in range(64)) + "\n")
        for y, row in zip(labels, pixels):
            f.write(str(int(y)) + "," + ",".join(str(int(v)) for v in row) + "\n")


def augment(x, gen):
    """Random shift by up to one pixel in each direction (zero fill) and a mild intensity scale."""
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    windows = padded.unfold(2, 8, 1).unfold(3, 8, 1)  # [N, 1, 3, 3, 8, 8]
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    shifted = windows[torch.arange(n), 0, dy, dx].unsqueeze(1)
    scale = 1.0 + 0.15 * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    return (shifted * scale).clamp(0.0, 1.0)


class CNN(nn.Module):
    """Two conv blocks (32, 64 channels) with batch norm, max pooling and dropout."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # [N, 32, 4, 4]
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # [N, 64, 2, 2]
        x = torch.flatten(x, 1)
        return self.fc(self.drop(x))


class Attention(nn.Module):
    """Multi-head self-attention written with plain MatMul / Softmax so it exports to basic ONNX ops."""

    def __init__(self, d, heads, tokens):
        super().__init__()
        self.d = d
        self.tokens = tokens
        self.heads = heads
        self.dh = d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        # Fixed token count and width (not x.shape) keep shape arithmetic out of the exported graph;
        # only the batch dimension (-1) is dynamic.
        t, d = self.tokens, self.d
        qkv = self.qkv(x).reshape(-1, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [N, H, T, dh]
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.dh))
        att = torch.softmax(att, dim=-1)
        out = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(-1, t, d)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, d, heads, tokens, ff, dropout):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads, tokens)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x)))
        x = x + self.drop(self.ff2(F.gelu(self.ff1(self.ln2(x)))))
        return x


class Transformer(nn.Module):
    """16 tokens of 2x2 pixel patches, d_model 48, 2 pre-norm layers of 4 heads, mean pool, linear head."""

    def __init__(self, d=48, heads=4, ff=96, layers=2, dropout=0.1):
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.pos = nn.Parameter(torch.zeros(1, 16, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([Block(d, heads, 16, ff, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        # [N, 1, 8, 8] -> [N, 16, 4]: row-major 4x4 grid of 2x2 patches.
        x = x.reshape(-1, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(-1, 16, 4)
        x = self.embed(x) + self.pos
        for b in self.blocks:
            x = b(x)
        x = self.ln(x).mean(dim=1)
        return self.head(x)


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    return int((pred == y).sum()), len(y)


def train(name, model, xtr, ytr, xcal, ycal, epochs, lr, wd, batch=64):
    gen = torch.Generator().manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps_per_epoch = math.ceil(len(ytr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        total = 0.0
        for i in range(0, len(ytr), batch):
            sel = perm[i : i + batch]
            xb = augment(xtr[sel], gen)
            loss = F.cross_entropy(model(xb), ytr[sel], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(sel)
        if (epoch + 1) % 25 == 0 or epoch == epochs - 1:
            c, n = accuracy(model, xcal, ycal)
            print(f"{name} epoch {epoch + 1:4d} loss {total / len(ytr):.4f} calib {c}/{n} = {c / n:.4f}", flush=True)
    model.eval()
    return model


def export(model, path):
    model.eval()
    dummy = torch.zeros(2, 1, 8, 8)
    torch.onnx.export(
        model,
        dummy,
        path,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
    )
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    return m


def dims(value_info):
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_contract(m):
    """The exported graph must have exactly one input and output with the agreed names, FP32, dynamic batch."""
    g = m.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in g.output] != [OUTPUT_NAME]:
        sys.exit(f"unexpected graph inputs/outputs {[i.name for i in inputs]} {[o.name for o in g.output]}")
    for vi in (inputs[0], g.output[0]):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            sys.exit(f"{vi.name}: not FP32")
        if not isinstance(dims(vi)[0], str):
            sys.exit(f"{vi.name}: batch dimension is not dynamic: {dims(vi)}")
    return dims(inputs[0]), dims(g.output[0])


def op_counts(m):
    counts = {}
    for n in m.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def const_weight_matmuls(m):
    """MatMul nodes whose second operand is an initializer (what a dynamic INT8 quantizer rewrites)."""
    inits = {i.name for i in m.graph.initializer}
    return sum(1 for n in m.graph.node if n.op_type == "MatMul" and n.input[1] in inits)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    ap.add_argument("--cnn-epochs", type=int, default=200)
    ap.add_argument("--transformer-epochs", type=int, default=400)
    ap.add_argument("--logits-dir", help="also write torch's test-set logits as NAME.test_logits.csv here (for cross-checks)")
    args = ap.parse_args()

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    seed_all(SEED)

    pixels, labels = load_digits(DIGITS_CSV)
    tr, cal, te = split(pixels, labels)
    print(f"split: train {len(tr)} calib {len(cal)} test {len(te)}")
    write_csv(os.path.join(args.out, "test.csv"), pixels[te], labels[te])
    write_csv(os.path.join(args.out, "calib.csv"), pixels[cal], labels[cal])

    xtr, ytr = to_input(pixels[tr]), torch.from_numpy(labels[tr])
    xcal, ycal = to_input(pixels[cal]), torch.from_numpy(labels[cal])
    xte, yte = to_input(pixels[te]), torch.from_numpy(labels[te])

    specs = [
        ("cnn", CNN, args.cnn_epochs, 3e-3, 1e-3, 0.98),
        ("transformer", Transformer, args.transformer_epochs, 2e-3, 1e-2, 0.96),
    ]
    meta = {
        "source": {
            "file": DIGITS_CSV,
            "package": "python3-sklearn (Debian)",
            "sha256": sha256_file(DIGITS_CSV),
            "rows": int(len(labels)),
        },
        "split": {
            "seed": SEED,
            "stratified": True,
            "train_rows": int(len(tr)),
            "calib_rows": int(len(cal)),
            "test_rows": int(len(te)),
            "disjoint": True,
        },
        "csv": {
            "header": "label,p0..p63",
            "pixels": "raw integers 0..16, row-major 8x8; divide by 16.0 for the model input",
            "test.csv": {"rows": int(len(te)), "sha256": None},
            "calib.csv": {"rows": int(len(cal)), "sha256": None},
        },
        "toolchain": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
        },
        "models": {},
    }
    for f in ("test.csv", "calib.csv"):
        meta["csv"][f]["sha256"] = sha256_file(os.path.join(args.out, f))

    failed = False
    for name, cls, epochs, lr, wd, goal in specs:
        seed_all(SEED)
        model = train(name, cls(), xtr, ytr, xcal, ycal, epochs, lr, wd)
        path = os.path.join(args.out, f"{name}.onnx")
        m = export(model, path)
        in_dims, out_dims = check_contract(m)
        ops = op_counts(m)
        tc, tn = accuracy(model, xte, yte)
        cc, cn = accuracy(model, xcal, ycal)
        params = sum(p.numel() for p in model.parameters())
        if args.logits_dir:
            with torch.no_grad():
                logits = model(xte).numpy()
            np.savetxt(os.path.join(args.logits_dir, f"{name}.test_logits.csv"), logits, delimiter=",", fmt="%.9g")
        print(
            f"{name}: test {tc}/{tn} = {tc / tn:.4f}, calib {cc}/{cn} = {cc / cn:.4f}, "
            f"{params} params, {os.path.getsize(path)} bytes, ops {ops}"
        )
        if tc / tn < goal:
            print(f"{name}: test accuracy {tc / tn:.4f} below goal {goal}", file=sys.stderr)
            failed = True
        meta["models"][name] = {
            "file": f"{name}.onnx",
            "sha256": sha256_file(path),
            "bytes": os.path.getsize(path),
            "parameters": int(params),
            "opset": OPSET,
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1 if isinstance(d, str) else d for d in in_dims]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1 if isinstance(d, str) else d for d in out_dims]}],
            "preprocess": "pixels / 16.0, NCHW [N,1,8,8]",
            "test_accuracy": round(tc / tn, 6),
            "test_correct": tc,
            "calib_accuracy": round(cc / cn, 6),
            "calib_correct": cc,
            "epochs": epochs,
            "ops": ops,
            "matmul_const_weight": const_weight_matmuls(m),
        }
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
