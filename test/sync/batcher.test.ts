import { describe, expect, it } from 'vitest';
import { createBatcher } from '../../src/sync/events/batcher.js';

const recording = (gather?: 'turn' | 'microtasks', maxSize = 100) => {
  const batches: number[][] = [];
  const batcher = createBatcher<number, number>({
    maxSize,
    ...(gather ? { gather } : {}),
    run: async (items) => {
      batches.push(items);
      return items.map((item) => item * 10);
    },
  });
  return { batches, batcher };
};

describe('createBatcher', () => {
  it('gathers the calls of one dispatch (each from its own promise callback) into one run, and answers each caller', async () => {
    for (const gather of ['turn', 'microtasks'] as const) {
      const { batches, batcher } = recording(gather);
      const answers = await Promise.all([1, 2, 3].map((item) => Promise.resolve().then(() => batcher.add(item))));
      expect(answers).toEqual([10, 20, 30]);
      expect(batches).toEqual([[1, 2, 3]]);
    }
  });

  it('with microtasks, sends the batch before the event loop runs anything else; by default it waits for the end of the turn', async () => {
    for (const [gather, expected] of [
      ['turn', [[1, 2]]],
      ['microtasks', [[1], [2]]],
    ] as const) {
      const { batches, batcher } = recording(gather);
      // Work the event loop already has queued (an I/O callback, another request) when the first call comes.
      const later = new Promise<number>((resolve) => setImmediate(() => resolve(batcher.add(2))));
      const first = batcher.add(1);
      await Promise.all([first, later]);
      expect(batches).toEqual(expected);
    }
  });

  it('splits at maxSize', async () => {
    const { batches, batcher } = recording('microtasks', 2);
    await Promise.all([1, 2, 3, 4, 5].map((item) => batcher.add(item)));
    expect(batches).toEqual([[1, 2], [3, 4], [5]]);
  });
});
