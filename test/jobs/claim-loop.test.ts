import { afterEach, describe, expect, it } from 'vitest';
import { createClaimLoop, type ClaimLoop } from '../../src/jobs/claim-loop.js';
import { silentLogger } from '../../src/logger.js';

/** A table of rows in memory: each claim takes up to `free` of them, and each is done at once. */
const tableLoop = (options: { claimSpacingMs: number; claimBatchSize?: number; finishingMakesClaimable?: boolean }) => {
  const rows: number[] = [];
  const claims: number[][] = [];
  let nextId = 1;
  const loop: ClaimLoop<number> = createClaimLoop<number>({
    log: silentLogger,
    what: 'rows',
    pollIntervalMs: 60_000,
    concurrency: 100,
    leaseMs: 60_000,
    ...options,
    claim: async (free) => {
      const taken = rows.splice(0, free);
      claims.push(taken);
      for (const id of taken) loop.track(id, id, Promise.resolve());
      return taken.length;
    },
    renewLeases: async () => {},
    remaining: async () => rows.length,
  });
  const arrive = () => {
    rows.push(nextId++);
    loop.wake();
  };
  return { loop, claims, arrive };
};

describe('the claim loop', () => {
  let running: ClaimLoop<number> | null = null;
  afterEach(async () => {
    await running?.stop();
    running = null;
  });

  it('gathers rows that trickle in, each with a wake, into few claims when claims are spaced', async () => {
    const { loop, claims, arrive } = tableLoop({ claimSpacingMs: 1000 });
    running = loop;
    loop.start();
    for (let index = 0; index < 20; index += 1) {
      arrive();
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await loop.drain();
    expect(claims.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
    // The first arrival is claimed at once; the rest wait for the spacing together (empty polls aside).
    expect(claims.filter((claim) => claim.length > 0).length).toBeLessThanOrEqual(3);
  });

  it('claims again after finished claims only where finishing can make rows claimable', async () => {
    const claimsAfterOneArrival = async (finishingMakesClaimable: boolean) => {
      const { loop, claims, arrive } = tableLoop({ claimSpacingMs: 0, finishingMakesClaimable });
      arrive();
      running = loop;
      loop.start();
      // Long enough for any claim a finished claim causes, far shorter than the poll.
      await new Promise((resolve) => setTimeout(resolve, 100));
      await loop.stop();
      running = null;
      return claims;
    };
    // The wake of the finished claim costs one more claim, which finds nothing.
    expect(await claimsAfterOneArrival(true)).toEqual([[1], []]);
    // Rows that only arrive: the arrival's wake is the only claim until the poll.
    expect(await claimsAfterOneArrival(false)).toEqual([[1]]);
  });

  it('still drains at once when finishing makes nothing claimable', async () => {
    const { loop, claims, arrive } = tableLoop({ claimSpacingMs: 0, finishingMakesClaimable: false });
    running = loop;
    loop.start();
    for (let index = 0; index < 5; index += 1) arrive();
    // The poll is a minute away: drain must not wait for it.
    await loop.drain();
    expect(claims.flat()).toHaveLength(5);
  }, 10_000);

  it('claims a backlog without waiting between full claims', async () => {
    const { loop, claims, arrive } = tableLoop({ claimSpacingMs: 60_000, claimBatchSize: 10 });
    for (let index = 0; index < 35; index += 1) arrive();
    running = loop;
    loop.start();
    // Spaced claims would take minutes: full claims are followed at once by the next one.
    await loop.drain();
    expect(claims.flat()).toHaveLength(35);
  }, 10_000);
});
