import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { runFullSync, type FullSyncOptions } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

describe('a full sync into an empty database says when its tables are loaded', () => {
  let database: TestDatabase;
  let sim: SimulatedTenant;

  beforeAll(async () => {
    database = await createTestDatabase();
    sim = await startTenant({ seed: 41, generate: { users: 250, organizations: 8, organizationRoles: 3 } });
  });
  afterAll(async () => {
    await sim.close();
    await database.drop();
  });

  const sync = (options: Partial<FullSyncOptions>) =>
    runFullSync(syncDepsFor(database, clientFor(sim)), { kind: 'baseline', trigger: 'test', ...options });

  it('after the users list and after every page, before the removals; the run ends only once that work has', async () => {
    const events: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let ended = false;
    const running = sync({
      onProgress: (progress) => {
        if (progress.phase === 'removals') events.push('removals');
      },
      onLoaded: (loaded) => {
        events.push(`loaded:${loaded}`);
        return loaded === 'pages' ? held : undefined;
      },
      beforeFinish: async () => {
        events.push('beforeFinish');
      },
    }).finally(() => (ended = true));
    // The removals find nothing to remove; the run then waits for the work started when its pages were loaded.
    await vi.waitFor(() => expect(events).toContain('removals'), { timeout: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(ended).toBe(false);
    expect(events).toEqual(['loaded:users', 'loaded:pages', 'removals']);
    release();
    const { run } = await running;
    expect(run.status).toBe('succeeded');
    expect(events).toEqual(['loaded:users', 'loaded:pages', 'removals', 'beforeFinish']);
    expect(await mirrorState(database.db)).toEqual(tenantState(sim.state.snapshot()));
  });

  it('not in a run over stored data, whose removals may change the tables', async () => {
    const onLoaded = vi.fn();
    const { run } = await sync({ kind: 'reconcile', onLoaded });
    expect(run.status).toBe('succeeded');
    expect(onLoaded).not.toHaveBeenCalled();
  });
});
