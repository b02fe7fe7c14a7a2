export type Row = Record<string, unknown>;

export interface Change<T extends Row = Row> {
  model: string;
  target: unknown;
  where?: Record<string, unknown>;
  data?: T;
  type: 'create' | 'update' | 'remove';
}

export interface LiveOptions {
  /** LoopBack where filter, evaluated by the server. */
  where?: Record<string, unknown>;
  /** Properties to keep (LoopBack fields, list form). */
  fields?: string[];
  /** LoopBack order: "prop ASC", a list, or comma-separated; ties by id. */
  order?: string | string[];
  /** The id property (default "id"). */
  idName?: string;
}

export type ConnectionState = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'error' | 'closed';

export interface ConnectionOptions {
  /** The gateway's origin (default: this page's). */
  base?: string;
  /** The REST root (default "/api"). */
  rest?: string;
  /** Extra request headers (credentials), or a function that returns them for each connection. */
  headers?: Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
  fetch?: typeof globalThis.fetch;
  /** Where the last position and rows survive a reload (default sessionStorage; null for none). */
  storage?: Storage | null;
  /** The storage key (default derived from base and rest). */
  key?: string;
  onState?: (state: ConnectionState, info: { position: string; error?: unknown }) => void;
}

export class LiveCollection<T extends Row = Row> {
  readonly model: string;
  readonly options: LiveOptions;
  /** True once the first snapshot (or the saved rows) arrived. */
  ready: boolean;
  /** The rows, in `order`; a new array after every change. */
  readonly rows: readonly T[];
  get(id: unknown): T | undefined;
  /** React's useSyncExternalStore contract. */
  subscribe(listener: (collection: LiveCollection<T>, change: Change<T> | null) => void): () => void;
  getSnapshot(): readonly T[];
  /** Stop following (the connection drops the model, or closes when it was the last). */
  close(): void;
}

export class Connection {
  constructor(options?: ConnectionOptions);
  readonly state: ConnectionState;
  /** The multiplexed stream's last event id: every model's position. */
  readonly position: string;
  live<T extends Row = Row>(model: string, options?: LiveOptions): LiveCollection<T>;
  close(): void;
}

/** A live collection on the shared connection of `base` (several calls share one connection). */
export function live<T extends Row = Row>(model: string, options?: LiveOptions & { base?: string }): LiveCollection<T>;

/** An incremental SSE parser (WHATWG rules). */
export function sseParser(
  on: (event: string, data: string, lastEventId: string) => void,
  onRetry?: (ms: number) => void,
): (text: string) => void;

export function comparator(order: string | string[] | undefined, idName?: string): (a: Row, b: Row) => number;
