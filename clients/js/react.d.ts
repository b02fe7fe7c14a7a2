import type { LiveCollection, Row } from './live.js';

/** The collection's ordered rows; re-renders on every change. */
export function useLive<T extends Row = Row>(collection: LiveCollection<T>): readonly T[];
