// A React hook over a LiveCollection: `useLive(collection)` re-renders with its ordered rows.
import { useSyncExternalStore } from 'react';

export function useLive(collection) {
  return useSyncExternalStore(collection.subscribe, collection.getSnapshot);
}
