import { describe, expect, it } from 'vitest';
import type { Page } from '../../src/logto/index.js';
import { batchObservedAt, pageBatches } from '../../src/sync/page-batches.js';

const page = (number: number, size: number, requestedAt?: Date): Page<{ id: string }> => ({
  items: Array.from({ length: size }, (_, index) => ({ id: `p${number}-${index}` })),
  page: number,
  total: null,
  ...(requestedAt ? { requestedAt } : {}),
});

async function* listOf(pages: Page<{ id: string }>[], failAfter?: number) {
  for (const [index, each] of pages.entries()) {
    if (failAfter !== undefined && index === failAfter) throw new Error('Logto unreachable');
    yield each;
  }
}

const collect = async (batches: AsyncIterable<Page<{ id: string }>[]>) => {
  const seen: number[][] = [];
  for await (const batch of batches) seen.push(batch.map((each) => each.page));
  return seen;
};

describe('pages gathered into batches', () => {
  it('gathers consecutive pages, in order, until they hold the limit, and yields the rest at the end', async () => {
    const pages = [page(1, 100), page(2, 100), page(3, 100), page(4, 100), page(5, 100), page(6, 40)];
    expect(await collect(pageBatches(listOf(pages), 250))).toEqual([[1, 2, 3], [4, 5, 6]]);
    expect(await collect(pageBatches(listOf(pages), 1))).toEqual([[1], [2], [3], [4], [5], [6]]);
  });

  it('yields the pages read before a failing request, then the failure', async () => {
    const pages = [page(1, 100), page(2, 100), page(3, 100), page(4, 100), page(5, 100)];
    const seen: number[][] = [];
    const failure = await (async () => {
      for await (const batch of pageBatches(listOf(pages, 3), 400)) seen.push(batch.map((each) => each.page));
    })().catch((error: unknown) => error);
    expect(seen).toEqual([[1, 2, 3]]);
    expect(failure).toBeInstanceOf(Error);
  });

  it('dates a batch by its earliest read, so it never overrides a change recorded after any of its pages', () => {
    const fallback = new Date('2026-01-01T00:00:10Z');
    const batch = [page(1, 1, new Date('2026-01-01T00:00:03Z')), page(2, 1, new Date('2026-01-01T00:00:01Z')), page(3, 1)];
    expect(batchObservedAt(batch, fallback)).toEqual(new Date('2026-01-01T00:00:01Z'));
    expect(batchObservedAt([page(1, 1)], fallback)).toEqual(fallback);
  });
});
