// Live queries over the change-stream gateway: keyed, ordered collections kept equal to the server's rows.
// One multiplexed connection (`/api/change-stream?models=...&snapshot=true`) per Connection; see
// docs/clients.md for the wire contract this follows. No dependencies: fetch, ReadableStream, TextDecoder.

const STORE = 'live:';

/** An incremental SSE parser (WHATWG rules): `feed(text)` calls `on(event, data, lastEventId)`; an
 * `id:`-only frame moves the id without an event, `retry:` is reported through `onRetry`. */
export function sseParser(on, onRetry = () => {}) {
  let buffer = '', data = [], event = '', id = null, last = '';
  return (text) => {
    buffer += text;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (id !== null) last = id;
        if (data.length) on(event || 'message', data.join('\n'), last);
        else if (id !== null) on('', '', last);
        data = []; event = ''; id = null;
        continue;
      }
      if (line[0] === ':') continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (name === 'data') data.push(value);
      else if (name === 'event') event = value;
      else if (name === 'id' && !value.includes('\0')) id = value;
      else if (name === 'retry' && /^\d+$/.test(value)) onRetry(Number(value));
    }
  };
}

/** A comparator for LoopBack's `order` ("prop ASC", a list, or comma-separated), then by `idName`. */
export function comparator(order, idName = 'id') {
  const terms = (Array.isArray(order) ? order : order ? String(order).split(',') : [])
    .map((term) => term.trim().split(/\s+/))
    .map(([prop, dir]) => [prop, /^desc$/i.test(dir || '') ? -1 : 1]);
  terms.push([idName, 1]);
  return (a, b) => {
    for (const [prop, sign] of terms) {
      const x = a[prop], y = b[prop];
      if (x === y) continue;
      if (x === undefined || x === null) return -sign;
      if (y === undefined || y === null) return sign;
      return (x < y ? -1 : 1) * sign;
    }
    return 0;
  };
}

/** One model's rows: `rows` (ordered), `get(id)`, `subscribe(fn)` / `getSnapshot()` (React's
 * `useSyncExternalStore` contract), `ready` once the first snapshot arrived. */
export class LiveCollection {
  constructor(model, options, release) {
    this.model = model;
    this.options = options;
    this.ready = false;
    this._map = new Map();
    this._rows = [];
    this._order = comparator(options.order, options.idName);
    this._listeners = new Set();
    this._release = release;
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
  }
  get rows() { return this._rows; }
  get(id) { return this._map.get(id); }
  getSnapshot() { return this._rows; }
  subscribe(fn) { this._listeners.add(fn); return () => this._listeners.delete(fn); }
  close() { this._release(this); }
  /** Apply one change object; idempotent (creates and updates carry the whole row). */
  apply(change) {
    if (change.type === 'remove') this._map.delete(change.target);
    else this._map.set(change.target, change.data);
    this._changed(change);
  }
  replace(rows) {
    this._map = new Map(rows);
    this.ready = true;
    this._changed(null);
  }
  _changed(change) {
    this._rows = [...this._map.values()].sort(this._order);
    for (const fn of this._listeners) fn(this, change);
  }
}

/** One multiplexed connection for any number of models (one filter per model). With `share` (the default
 * where BroadcastChannel and Web Locks exist), the tabs of an origin elect a leader that holds the only
 * connection and broadcasts what it reads; a follower becomes the leader when the leader's tab closes. */
export class Connection {
  constructor({ base = '', rest = '/api', headers = {}, fetch: fetcher, storage, onState, key, share = true } = {}) {
    this.base = base;
    this.rest = rest;
    this.headers = headers;
    this.state = 'idle';
    this.position = '';
    this._fetch = fetcher || ((...a) => globalThis.fetch(...a));
    this._storage = storage === undefined ? globalThis.sessionStorage : storage;
    this._key = STORE + (key || base + rest);
    this._onState = onState || (() => {});
    this._collections = new Map();
    this._retry = 1000;
    this._attempt = 0;
    this._abort = null;
    this._running = false;
    this._stale = false;
    this._saving = null;
    this._saved = null;
    this._restore();
    this._leader = !(share && globalThis.BroadcastChannel && globalThis.navigator?.locks);
    if (!this._leader) this._follow();
  }

  _follow() {
    this._channel = new BroadcastChannel(this._key);
    this._channel.onmessage = ({ data }) => this._message(data);
    globalThis.navigator.locks.request(this._key, () => new Promise((resolve) => {
      this._resign = resolve;
      this._leader = true;
      this._channel.postMessage({ type: 'hello' });
      if (this._collections.size) this._restart();
    }));
  }

  _message(message) {
    const { type, model } = message;
    if (this._leader) {
      if (type !== 'want') return;
      const entry = this._collections.get(model);
      if (!entry) this.live(model, message.options);
      else if (entry.collection.ready && JSON.stringify(wire(entry.collection.options)) === JSON.stringify(wire(message.options))) this._post({ type: 'rows', model, rows: [...entry.collection._map], position: this.position });
    } else if (type === 'event') this._event(message.event, message.data, message.id, false);
    else if (type === 'rows') {
      this._collections.get(model)?.collection.replace(message.rows);
      this._changed();
    }
    else if (type === 'state') this._setState(message.state, message.error);
    else if (type === 'hello') for (const m of this._collections.keys()) this._want(m);
  }

  _post(message) {
    if (this._channel && this._leader) this._channel.postMessage(message);
  }

  _want(model) {
    this._channel.postMessage({ type: 'want', model, options: this._collections.get(model).collection.options });
  }

  /** A live collection of `model` rows matching `where`, with `fields`, ordered by `order`. */
  live(model, options = {}) {
    const wanted = JSON.stringify(wire(options));
    const existing = this._collections.get(model);
    if (existing) {
      if (JSON.stringify(wire(existing.collection.options)) !== wanted) {
        throw new Error(`${model} is already followed with other options on this connection`);
      }
      existing.users += 1;
      return existing.collection;
    }
    const collection = new LiveCollection(model, options, () => this._release(model));
    const saved = this._saved?.[model];
    if (saved && saved.options === wanted) collection.replace(saved.rows);
    else this.position = dropPart(this.position, model);
    this._collections.set(model, { collection, users: 1, snapshot: null });
    if (this._leader) this._restart();
    else this._want(model);
    return collection;
  }

  close() {
    this._resign?.();
    this._channel?.close();
    this._running = false;
    this._collections.clear();
    this._abort?.abort();
    this._setState('closed');
  }

  _release(model) {
    const entry = this._collections.get(model);
    if (!entry || --entry.users > 0) return;
    this._collections.delete(model);
    this.position = dropPart(this.position, model);
    if (!this._collections.size) this.close();
    else if (this._leader) this._restart();
  }

  _restart() {
    if (this._running) this._abort?.abort();
    else queueMicrotask(() => this._loop());
    this._running = true;
  }

  _url() {
    const models = [...this._collections.keys()];
    const query = [`models=${models.map(encodeURIComponent).join(',')}`, 'snapshot=true'];
    for (const [model, { collection }] of this._collections) {
      const options = wire(collection.options);
      if (Object.keys(options).length) {
        query.push(`options[${encodeURIComponent(model)}]=${encodeURIComponent(JSON.stringify(options))}`);
      }
    }
    return `${this.base}${this.rest}/change-stream?${query.join('&')}`;
  }

  async _loop() {
    while (this._running && this._collections.size) {
      const abort = (this._abort = new AbortController());
      let failure = null;
      try {
        await this._stream(abort.signal);
      } catch (error) {
        failure = error;
      }
      if (!this._running || !this._collections.size) break;
      if (abort.signal.aborted) continue; // models changed, or a reset: reconnect at once
      if (failure?.fatal) {
        this._setState('error', failure);
        this._running = false;
        break;
      }
      this._setState('reconnecting', failure);
      const delay = Math.min(30000, this._retry * 2 ** Math.min(this._attempt++, 5));
      await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
    }
  }

  async _stream(signal) {
    this._setState('connecting');
    this._stale = false;
    for (const entry of this._collections.values()) entry.snapshot = null;
    const headers = { accept: 'text/event-stream', ...(typeof this.headers === 'function' ? await this.headers() : this.headers) };
    if (this.position) headers['last-event-id'] = this.position;
    const response = await this._fetch(this._url(), { headers, signal, cache: 'no-store' });
    if (response.status !== 200) {
      const error = new Error(`change stream: HTTP ${response.status} ${await response.text()}`);
      error.fatal = response.status >= 400 && response.status < 500 && response.status !== 429;
      throw error;
    }
    this._changed();
    const feed = sseParser((event, data, id) => this._event(event, data, id), (ms) => { this._retry = ms; });
    const decoder = new TextDecoder();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        feed(decoder.decode(value, { stream: true }));
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  _event(event, data, id, own = true) {
    if (own && this._stale) return; // a reset or error asked for a new connection: the rest of this one is moot
    if (own) this._post({ type: 'event', event, data, id });
    this.position = id;
    if (!data) return this._changed();
    const message = JSON.parse(data);
    const entry = this._collections.get(message.model);
    if (!entry) return;
    if (event === 'data') {
      // A model has no part in the id until its snapshot ends: until then its rows are the snapshot.
      if (hasPart(id, message.model)) entry.collection.apply(message);
      else (entry.snapshot ||= []).push([message.target, message.data]);
    } else if (event === 'snapshot-end') {
      entry.collection.replace(entry.snapshot || []);
      entry.snapshot = null;
    } else if (event === 'reset' || event === 'error') {
      if (event === 'reset') this.position = dropPart(id, message.model); // the server snapshots it again
      if (!own) return;
      this._stale = true;
      this._abort?.abort();
      return;
    }
    this._changed();
  }

  _changed() {
    if (this.state !== 'live' && [...this._collections.values()].every((e) => e.collection.ready)) {
      this._attempt = 0;
      this._setState('live');
    }
    this._save();
  }

  _setState(state, error) {
    this._post({ type: 'state', state, error: error && String(error) });
    this.state = state;
    this._onState(state, { position: this.position, error });
  }

  _restore() {
    try {
      const saved = JSON.parse(this._storage?.getItem(this._key) || 'null');
      if (saved) [this.position, this._saved] = [saved.position, saved.models];
    } catch { this._saved = null; }
  }

  _save() {
    if (!this._storage || this._saving) return;
    this._saving = setTimeout(() => {
      this._saving = null;
      const models = {};
      for (const [model, { collection }] of this._collections) {
        if (collection.ready) models[model] = { options: JSON.stringify(wire(collection.options)), rows: [...collection._map] };
      }
      try {
        this._storage.setItem(this._key, JSON.stringify({ position: this.position, models }));
      } catch { this._storage.removeItem(this._key); }
    }, 200);
  }
}

const pool = new Map();

/** `live(model, {where, fields, order})` on a shared connection per gateway (`base`): several calls share
 * one multiplexed connection; a second filter on the same model gets a connection of its own. */
export function live(model, { base = '', ...options } = {}) {
  const connections = pool.get(base) || [];
  pool.set(base, connections);
  for (const connection of connections) {
    try {
      if (connection.state !== 'closed') return connection.live(model, options);
    } catch { /* this connection follows the model with another filter */ }
  }
  const connection = new Connection({ base, key: `${base}#${connections.length}` });
  connections.push(connection);
  return connection.live(model, options);
}

function wire({ where, fields }) {
  const options = {};
  if (where) options.where = where;
  if (fields) options.fields = fields;
  return options;
}

function hasPart(position, model) {
  return `,${position}`.includes(`,${model}:`);
}

function dropPart(position, model) {
  return position.split(',').filter((part) => part && !part.startsWith(`${model}:`)).join(',');
}
