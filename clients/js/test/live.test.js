// The client against a real gateway (`gateway serve`, SQLite, embedded broker), started by this test.
// GATEWAY_BIN names the gateway command (default: the repository's .venv).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Connection, LiveCollection, comparator, sseParser } from '../live.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const bin = process.env.GATEWAY_BIN || join(repo, '.venv', 'bin', 'gateway');
const work = mkdtempSync(join(tmpdir(), 'live-js-'));
let port;
let gateway;
let base;

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port: found } = server.address();
      server.close(() => resolve(found));
    });
  });
}

async function start() {
  gateway = spawn(bin, ['serve', '--port', String(port), '--log-level', 'warning'], {
    env: {
      ...process.env,
      GATEWAY_DATABASE_URL: `sqlite+aiosqlite:///${join(work, 'gw.db')}`,
      GATEWAY_MODELS: join(work, 'models'),
      GATEWAY_RETRY: '200',
      GATEWAY_DRAIN_SECONDS: '0.2',
      GATEWAY_HEARTBEAT: '1',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await until(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 30000, 'the gateway starts');
}

async function stop(signal) {
  const exited = new Promise((resolve) => gateway.once('exit', resolve));
  gateway.kill(signal);
  await exited;
}

async function until(condition, within = 20000, what = 'condition') {
  const deadline = Date.now() + within;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${within} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  mkdirSync(join(work, 'models'));
  writeFileSync(join(work, 'models', 'todo.json'), readFileSync(join(repo, 'examples', 'models', 'todo.json')));
  writeFileSync(join(work, 'models', 'color.json'),
    JSON.stringify({ name: 'Color', base: 'PersistedModel', properties: { name: { type: 'string' }, rank: { type: 'number' } } }));
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  await start();
});

after(async () => {
  if (gateway.exitCode === null) await stop('SIGTERM');
});

const api = (path, method = 'GET', body) =>
  fetch(`${base}/api${path}`, { method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body) })
    .then((response) => response.json());

async function equalsServer(collection, plural, filter) {
  const rows = await api(`/${plural}?filter=${encodeURIComponent(JSON.stringify(filter))}`);
  return collection.ready && JSON.stringify(collection.rows) === JSON.stringify(rows);
}

async function randomWrites(count, rng) {
  for (let n = 0; n < count; n++) {
    const pick = rng();
    const id = 1 + Math.floor(rng() * (n / 2 + 3));
    if (pick < 0.35) await api('/Todos', 'POST', { title: `t${n}`, done: rng() < 0.5, priority: Math.floor(rng() * 10) });
    else if (pick < 0.5) await api('/Colors', 'POST', { name: `c${n}`, rank: Math.floor(rng() * 5) });
    else if (pick < 0.7) await api(`/Todos/${id}`, 'PATCH', { done: rng() < 0.5, priority: Math.floor(rng() * 10) });
    else if (pick < 0.8) await api(`/Todos/update?where=${encodeURIComponent(JSON.stringify({ priority: { lt: 3 } }))}`, 'POST', { done: rng() < 0.5 });
    else if (pick < 0.9) await api(`/Todos/${id}`, 'DELETE');
    else await api(`/Colors/${id}`, 'PATCH', { rank: Math.floor(rng() * 5) });
  }
}

function seeded(seed) {
  return () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
}

test('the client is under 6 KB gzipped (unminified, so minified is smaller) and imports nothing', () => {
  const source = readFileSync(join(here, '..', 'live.js'));
  const size = gzipSync(source, { level: 9 }).length;
  console.log(`live.js: ${source.length} bytes, ${size} bytes gzipped`);
  assert.ok(size < 6144, `${size} bytes gzipped`);
  assert.doesNotMatch(source.toString(), /^\s*import\s/m);
});

test('the SSE parser follows the spec: id-only frames, retry, comments, CRLF split across chunks', () => {
  const events = [];
  let retry = null;
  const feed = sseParser((event, data, id) => events.push([event, data, id]), (ms) => { retry = ms; });
  feed('retry: 250\r\n:ok\r\n\r\nid: a\r');
  feed('\n\r\nevent: data\ndata: {"x":1}\n\n: ping\n\nid: b\nevent: reset\nda');
  feed('ta: 1\ndata: 2\n\n');
  assert.equal(retry, 250);
  assert.deepEqual(events, [['', '', 'a'], ['data', '{"x":1}', 'a'], ['reset', '1\n2', 'b']]);
});

test('order follows LoopBack: ASC/DESC terms, nulls first ascending, ties by id', () => {
  const rows = [{ id: 3, p: 1 }, { id: 1, p: 2 }, { id: 2, p: 1 }, { id: 4 }];
  assert.deepEqual(rows.sort(comparator('p DESC')).map((r) => r.id), [1, 2, 3, 4]);
  assert.deepEqual(rows.sort(comparator(['p ASC'])).map((r) => r.id), [4, 2, 3, 1]);
});

test('a collection keeps React useSyncExternalStore\'s contract: the same snapshot until a change', () => {
  const collection = new LiveCollection('Todo', { order: 'title ASC' }, () => {});
  const seen = [];
  const unsubscribe = collection.subscribe((_c, change) => seen.push(change?.type));
  const empty = collection.getSnapshot();
  assert.equal(collection.getSnapshot(), empty);
  collection.replace([[1, { id: 1, title: 'b' }]]);
  collection.apply({ target: 2, data: { id: 2, title: 'a' }, type: 'create' });
  collection.apply({ target: 2, data: { id: 2, title: 'a' }, type: 'create' });
  const two = collection.getSnapshot();
  assert.notEqual(two, empty);
  assert.equal(collection.getSnapshot(), two);
  assert.deepEqual(two.map((row) => row.title), ['a', 'b']);
  collection.apply({ target: 1, where: { id: 1 }, type: 'remove' });
  unsubscribe();
  collection.apply({ target: 3, data: { id: 3, title: 'c' }, type: 'create' });
  assert.deepEqual(seen, [undefined, 'create', 'create', 'remove']);
  assert.equal(collection.get(3).title, 'c');
});

test('live collections on one connection stay equal to GET through writes, SIGTERM, SIGKILL and lost history', async () => {
  let opened = 0;
  const states = [];
  const connection = new Connection({
    base,
    storage: null,
    fetch: (...args) => { opened += 1; return fetch(...args); },
    onState: (state) => states.push(state),
  });
  const openTodos = { where: { done: false }, order: 'priority DESC' };
  const todos = connection.live('Todo', openTodos);
  const colors = connection.live('Color', { fields: ['id', 'name', 'rank'], order: 'rank ASC' });
  assert.equal(connection.live('Todo', openTodos), todos);
  assert.throws(() => connection.live('Todo', { where: { done: true } }), /other options/);
  const todoFilter = { where: { done: false }, order: 'priority DESC' };
  const colorFilter = { fields: ['id', 'name', 'rank'], order: 'rank ASC' };
  const rng = seeded(15);
  const converge = async (phase) => {
    await until(async () => (await equalsServer(todos, 'Todos', todoFilter)) && (await equalsServer(colors, 'Colors', colorFilter)), 30000, `collections equal GET after ${phase}`);
  };
  await until(() => connection.state === 'live', 20000, 'the connection is live');
  assert.equal(opened, 1, 'both models share one connection');
  await randomWrites(80, rng);
  await converge('writes');
  assert.ok(todos.rows.length > 0 && colors.rows.length > 0);

  await stop('SIGTERM'); // the embedded broker's history goes with it: the new process is a new epoch
  await start();
  await randomWrites(60, rng);
  await converge('SIGTERM and a new epoch (reset)');

  await stop('SIGKILL');
  await start();
  await randomWrites(60, rng);
  await converge('SIGKILL');
  assert.ok(states.includes('reconnecting'));
  assert.ok(opened >= 3);
  connection.close();
});

test('reloading resumes from the saved position and rows instead of a new snapshot', async () => {
  const saved = new Map();
  const storage = { getItem: (k) => saved.get(k) ?? null, setItem: (k, v) => saved.set(k, v), removeItem: (k) => saved.delete(k) };
  const urls = [];
  const options = { base, storage, fetch: (url, init) => { urls.push([url, init.headers['last-event-id']]); return fetch(url, init); } };
  const first = new Connection(options);
  const colors = first.live('Color');
  await until(() => colors.ready, 20000, 'the first snapshot');
  await api('/Colors', 'POST', { name: 'before reload' });
  await until(() => colors.rows.some((r) => r.name === 'before reload'));
  await until(() => saved.size === 1 && JSON.parse([...saved.values()][0]).position.includes('Color:'));
  await new Promise((resolve) => setTimeout(resolve, 300));
  first.close();
  await api('/Colors', 'POST', { name: 'while reloading' });
  const second = new Connection(options);
  const again = second.live('Color');
  assert.ok(again.ready, 'the saved rows are there at once');
  await until(() => again.rows.some((r) => r.name === 'while reloading'));
  assert.ok(urls.at(-1)[1].startsWith('Color:'), 'the reload resumed with Last-Event-ID');
  assert.ok(await equalsServer(again, 'Colors', {}));
  second.close();
});
