// A minimal Open Inference Protocol (v2 JSON) server on onnxruntime-node:
// the peer a user might write instead of running the edgefleet agent. The
// serving benchmark (`edgefleet bench serving --node-peer`) measures it with
// the same model, threads and requests as the agent.
//
//   node server.js MODEL.onnx NAME PORT [WORKERS]
//
// WORKERS > 1 runs a node:cluster of that many processes sharing the port.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const ort = require('onnxruntime-node');

const [modelPath, name, port, workersArg] = process.argv.slice(2);
const workers = Number(workersArg || 1);

const typed = {
  FP32: [Float32Array, 'float32'], FP64: [Float64Array, 'float64'],
  INT32: [Int32Array, 'int32'], INT64: [BigInt64Array, 'int64'],
  UINT8: [Uint8Array, 'uint8'], INT8: [Int8Array, 'int8'], BOOL: [Uint8Array, 'bool'],
};
const v2type = { float32: 'FP32', float64: 'FP64', int32: 'INT32', int64: 'INT64', uint8: 'UINT8', int8: 'INT8', bool: 'BOOL' };

async function serve() {
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const server = http.createServer((req, res) => {
    const fail = (code, msg) => { res.writeHead(code, { 'Content-Type': 'application/json' }); res.end(JSON.stringify({ error: msg })); };
    if (req.method !== 'POST' || req.url !== `/v2/models/${name}/infer`) {
      if (req.url === '/v2/health/ready') { res.writeHead(200); res.end(); return; }
      return fail(404, 'not found');
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString());
        const feeds = {};
        for (const t of body.inputs) {
          const [Ctor, type] = typed[t.datatype] || [];
          if (!Ctor) return fail(400, `unsupported datatype ${t.datatype}`);
          const data = type === 'int64' ? BigInt64Array.from(t.data.flat(Infinity), BigInt) : Ctor.from(t.data.flat(Infinity));
          feeds[t.name] = new ort.Tensor(type, data, t.shape);
        }
        const results = await session.run(feeds);
        const outputs = Object.entries(results).map(([n, v]) => ({
          name: n, datatype: v2type[v.type] || v.type, shape: v.dims,
          data: v.type === 'int64' ? Array.from(v.data, Number) : Array.from(v.data),
        }));
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ model_name: name, model_version: '1', id: body.id, outputs }));
      } catch (e) {
        fail(400, String(e && e.message || e));
      }
    });
  });
  server.keepAliveTimeout = 60000;
  server.listen(Number(port), '127.0.0.1');
}

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  serve().catch((e) => { console.error(e); process.exit(1); });
}
