// A neutral load probe for any server that speaks the Todo change stream over EventSource (the gateway,
// LoopBack 3, Nchan): Node's own `http`, nothing tuned to one server. The main process forks READER_PROCS
// children that each hold a share of READERS streams, and one writer child that sends EVENTS POSTs over
// WRITERS keep-alive connections, each connection sequential (the next POST once the last answered). Every
// POST's `title` is its send time in microseconds of wall clock, so a reader's receive time minus it is the
// commit->reader latency, whoever the server is. WRITER_PROCS processes (default 1) share the EVENTS and the
// WRITERS connections, so that raising the POST concurrency does not saturate one Node process. Protocol with the harness (peers_bench.py): the probe
// prints `OPEN` once every stream has its response headers, waits for a line on stdin before writing, and
// prints `DONE <json>` at the end, with its own CPU from then on (all its processes), so a saturated probe
// is visible.
'use strict';
const http = require('node:http');
const {fork} = require('node:child_process');
const {performance} = require('node:perf_hooks');
const readline = require('node:readline');

const cfg = JSON.parse(process.env.PROBE || '{}');
const url = new URL(cfg.url || 'http://127.0.0.1:3000');
const STREAM_PATH = '/api/Todos/change-stream?_format=event-stream';
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const TITLE = /"title":"(\d{16})"/;

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function reader(count, events) {
  const latencies = [];
  let open = 0;
  let done = 0;
  let errors = 0;
  let cpuAtGo = cpuSeconds();
  const agent = new http.Agent({keepAlive: false, maxSockets: Infinity});
  const report = () => process.send({type: 'done', latencies, errors, cpu: cpuSeconds() - cpuAtGo});
  const finishIfDone = () => {
    if (done === count) report();
  };
  for (let i = 0; i < count; i++) {
    let seen = 0;
    let tail = '';
    const request = http.get(
      {host: url.hostname, port: url.port, path: STREAM_PATH, agent, headers: {Accept: 'text/event-stream'}},
      (response) => {
        if (response.statusCode !== 200) errors++;
        if (++open === count) process.send({type: 'open'});
        response.setEncoding('utf8');
        response.on('data', (chunk) => {
          const lines = (tail + chunk).split('\n');
          tail = lines.pop();
          const at = nowUs();
          for (const line of lines) {
            if (!line.startsWith('data:')) continue;
            const match = TITLE.exec(line);
            if (match === null) continue;
            latencies.push(at - Number(match[1]));
            if (++seen === events) {
              done++;
              finishIfDone();
            }
          }
        });
      },
    );
    request.on('error', () => {
      errors++;
      if (++open === count) process.send({type: 'open'});
    });
  }
  process.on('message', (message) => {
    if (message.type === 'go') cpuAtGo = cpuSeconds();
    if (message.type === 'stop') report();
  });
}

function writer(events, writers) {
  const agent = new http.Agent({keepAlive: true, maxSockets: writers});
  const latencies = [];
  let next = 0;
  let failed = 0;
  let running = writers;
  const started = nowUs();
  const cpuAtStart = cpuSeconds();
  const post = () => {
    if (next >= events) {
      if (--running === 0) {
        process.send({type: 'written', latencies, failed, started, ended: nowUs(), cpu: cpuSeconds() - cpuAtStart});
      }
      return;
    }
    next++;
    const sent = nowUs();
    const body = JSON.stringify({title: String(sent)});
    const request = http.request(
      {
        host: url.hostname, port: url.port, path: '/api/Todos', method: 'POST', agent,
        headers: {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)},
      },
      (response) => {
        if (response.statusCode >= 300) failed++;
        response.resume();
        response.on('end', () => {
          latencies.push(nowUs() - sent);
          post();
        });
      },
    );
    request.on('error', () => {
      failed++;
      post();
    });
    request.end(body);
  };
  for (let i = 0; i < writers; i++) post();
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] / 1000 : null;
}

function main() {
  const readers = cfg.readers ?? 200;
  const events = cfg.events ?? 200;
  const procs = Math.max(1, Math.min(cfg.readerProcs ?? 2, readers || 1));
  const children = [];
  let opened = 0;
  const results = [];
  let written = null;
  let lastDelivery = 0;
  const spawn = (role, extra) => fork(__filename, [], {env: {...process.env, PROBE_ROLE: role, PROBE_ARGS: JSON.stringify(extra)}});
  const finish = () => {
    const latencies = [];
    let errors = 0;
    let probeCpu = cpuSeconds() - mainCpuAtGo + written.cpu;
    for (const r of results) {
      for (const l of r.latencies) latencies.push(l);
      errors += r.errors;
      probeCpu += r.cpu;
    }
    latencies.sort((a, b) => a - b);
    const posts = written.latencies.sort((a, b) => a - b);
    const windowS = (Math.max(lastDelivery, written.ended) - written.started) / 1e6;
    const report = {
      readers, events, writers: cfg.writers ?? 1, readerProcs: procs, writerProcs: cfg.writerProcs ?? 1,
      deliveries: latencies.length, expected: readers * events, errors, postsFailed: written.failed,
      windowSeconds: windowS, deliveriesPerSecond: latencies.length / windowS,
      latencyMs: {p50: percentile(latencies, 50), p99: percentile(latencies, 99), max: percentile(latencies, 100)},
      postMs: {p50: percentile(posts, 50), p99: percentile(posts, 99)},
      probeCpuSeconds: probeCpu,
    };
    process.stdout.write(`DONE ${JSON.stringify(report)}\n`);
    for (const child of children) child.kill();
    process.exit(0);
  };
  let mainCpuAtGo = 0;
  const startWriting = () => {
    mainCpuAtGo = cpuSeconds();
    for (const child of children) child.send({type: 'go'});
    const writerChildren = [];
    const parts = [];
    const writers = cfg.writers ?? 1;
    const writerProcs = Math.max(1, Math.min(cfg.writerProcs ?? 1, writers));
    const onWritten = (message) => {
      parts.push(message);
      if (parts.length < writerProcs) return;
      written = {
        latencies: parts.flatMap((part) => part.latencies),
        failed: parts.reduce((sum, part) => sum + part.failed, 0),
        started: Math.min(...parts.map((part) => part.started)),
        ended: Math.max(...parts.map((part) => part.ended)),
        cpu: parts.reduce((sum, part) => sum + part.cpu, 0),
      };
      if (readers === 0 || events === 0 || results.length === procs) return finish();
      // Give the last deliveries a generous while, then take what arrived.
      const stop = () => children.forEach((c) => !writerChildren.includes(c) && c.connected && c.send({type: 'stop'}));
      setTimeout(stop, cfg.graceMs ?? 15000);
    };
    for (let p = 0; p < writerProcs; p++) {
      const share = (total) => Math.floor(total / writerProcs) + (p < total % writerProcs ? 1 : 0);
      const w = spawn('writer', {events: share(events), writers: share(writers)});
      children.push(w);
      writerChildren.push(w);
      w.on('message', onWritten);
    }
  };
  const onReaderMessage = (message) => {
    if (message.type === 'open' && ++opened === procs) {
      process.stdout.write('OPEN\n');
      readline.createInterface({input: process.stdin}).once('line', startWriting);
    } else if (message.type === 'done') {
      results.push(message);
      lastDelivery = Math.max(lastDelivery, nowUs());
      if (results.length === procs && written !== null) finish();
    }
  };
  if (readers === 0) {
    process.stdout.write('OPEN\n');
    readline.createInterface({input: process.stdin}).once('line', startWriting);
  }
  for (let p = 0; p < (readers === 0 ? 0 : procs); p++) {
    const share = Math.floor(readers / procs) + (p < readers % procs ? 1 : 0);
    const child = spawn('reader', {count: share, events});
    children.push(child);
    child.on('message', onReaderMessage);
  }
}

const role = process.env.PROBE_ROLE;
const args = JSON.parse(process.env.PROBE_ARGS || '{}');
if (role === 'reader') reader(args.count, args.events);
else if (role === 'writer') writer(args.events, args.writers);
else main();
