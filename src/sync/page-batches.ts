import type { Page } from '../logto/index.js';

/**
 * Consecutive pages of one list, as they arrive, gathered until they hold `maxItems` items or the list
 * ends: a crawl then writes them as one apply. A baseline's cost in PostgreSQL and in this process is
 * mostly per statement (planning each page's statements for its values, starting their executors, round
 * trips, commits), not per row: the same rows inserted in one statement cost a third of what pages of a
 * hundred did. Pages are still requested ahead as before, so gathering the next ones waits only for
 * requests already in flight.
 */
export async function* pageBatches<T>(pages: AsyncIterable<Page<T>>, maxItems: number): AsyncGenerator<Page<T>[]> {
  let batch: Page<T>[] = [];
  let items = 0;
  try {
    for await (const page of pages) {
      batch.push(page);
      items += page.items.length;
      if (items >= maxItems) {
        yield batch;
        batch = [];
        items = 0;
      }
    }
  } catch (error) {
    // The pages read before the failure are still applied: the next run continues after them.
    if (batch.length > 0) yield batch;
    throw error;
  }
  if (batch.length > 0) yield batch;
}

/** When a batch of pages was true in Logto: the earliest of its pages' reads, so it never overrides a change recorded after any of them. */
export const batchObservedAt = <T>(batch: Page<T>[], fallback: Date): Date =>
  batch.reduce<Date | undefined>((earliest, page) => (page.requestedAt && (!earliest || page.requestedAt < earliest) ? page.requestedAt : earliest), undefined) ??
  fallback;
