#!/usr/bin/env node
// ONNX Runtime reference for `clipagiqa bench`: runs CLIP's image tower exported
// to ONNX (reference.py's export_onnx op) with onnxruntime-node's CPU provider.
// Same protocol as reference.py --serve: one JSON request per line on stdin,
// one JSON reply per line on stdout. Ops: load, encoder, features, quit.
// onnxruntime-node is found through NODE_PATH (the bench installs it with
// `npm install --ignore-scripts onnxruntime-node` into its cache directory).
'use strict';
const fs = require('fs');
const readline = require('readline');
const ort = require('onnxruntime-node');

let session = null;
let inputName = '';
let resolution = 0;

function statusKB(field) {
  try {
    const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp('^' + field + ':\\s+(\\d+)', 'm'));
    return m ? Number(m[1]) : 0;
  } catch (e) {
    return 0;
  }
}

function resetHWM() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch (e) {
    return false;
  }
}

// readNpy reads a little-endian float32 C-order .npy file.
function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(path + ': not a .npy file');
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const off = (major === 1 ? 10 : 12) + hlen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, off);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(path + ': need float32 data, header ' + header);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(path + ': Fortran order is not supported');
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter(s => s.trim() !== '').map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length));
  return { data, shape };
}

function randn(n) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.random() || 1e-12, v = Math.random();
    const r = Math.sqrt(-2 * Math.log(u));
    a[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) a[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return a;
}

const ops = {
  async load(req) {
    const threads = Number(req.threads) || require('os').cpus().length;
    const t = process.hrtime.bigint();
    session = await ort.InferenceSession.create(req.onnx, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    inputName = session.inputNames[0];
    resolution = Number(req.resolution);
    return { load_s: Number(process.hrtime.bigint() - t) / 1e9, threads, torch: 'onnxruntime-node ' + require('onnxruntime-node/package.json').version };
  },
  async encoder(req) {
    const b = Number(req.batch), r = resolution;
    const x = new ort.Tensor('float32', randn(b * 3 * r * r), [b, 3, r, r]);
    const warm = req.warmup === undefined ? 1 : Number(req.warmup);
    const times = [];
    for (let i = 0; i < warm + Number(req.iters); i++) {
      const t = process.hrtime.bigint();
      await session.run({ [inputName]: x });
      times.push(Number(process.hrtime.bigint() - t) / 1e9);
    }
    return { times: times.slice(warm) };
  },
  async features(req) {
    const { data, shape } = readNpy(req.pixels);
    const out = await session.run({ [inputName]: new ort.Tensor('float32', data, shape) });
    const f = out[session.outputNames[0]];
    return { features: Array.from(f.data), shape: f.dims };
  },
  async rss() {
    return { rss_kb: statusKB('VmRSS') };
  },
};

async function main() {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let out;
    try {
      const req = JSON.parse(line);
      if (req.op === 'quit') {
        process.stdout.write(JSON.stringify({ ok: true }) + '\n');
        break;
      }
      const fn = ops[req.op];
      if (!fn) throw new Error('unknown op ' + JSON.stringify(req.op));
      const reset = resetHWM();
      out = await fn(req);
      out.hwm_kb = statusKB('VmHWM');
      out.hwm_reset = reset;
      out.ok = true;
    } catch (e) {
      out = { ok: false, error: String(e && e.stack || e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
  process.exit(0);
}

main();
