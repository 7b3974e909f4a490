import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrationsApplied, openDatabase, runMigrations } from '../../src/db/client.js';
import { runFullSync } from '../../src/sync/full-sync.js';
import { mirrorState, tenantState } from '../helpers/compare.js';
import { clientFor, startTenant, syncDepsFor } from '../helpers/tenant.js';

// Whatever database the rest of the suite uses, the embedded path keeps tests of its own.
describe('embedded PGlite database', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'las-pglite-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('runs the same migrations and a full sync, and keeps the data on disk', { timeout: 120_000 }, async () => {
    const sim = await startTenant({ seed: 11, generate: { users: 120, organizations: 8, organizationRoles: 3 } });
    try {
      const first = await openDatabase({ dataDir });
      expect(first.driver).toBe('pglite');
      await runMigrations(first);
      expect(await migrationsApplied(first.db)).toBe(true);
      const { run } = await runFullSync(syncDepsFor(first, clientFor(sim)), { kind: 'baseline', trigger: 'test' });
      expect(run.status).toBe('succeeded');
      const expected = tenantState(sim.state.snapshot());
      expect(await mirrorState(first.db)).toEqual(expected);
      await first.close();

      const reopened = await openDatabase({ dataDir });
      await runMigrations(reopened);
      expect(await mirrorState(reopened.db)).toEqual(expected);
      const again = await runFullSync(syncDepsFor(reopened, clientFor(sim)), { kind: 'reconcile', trigger: 'test' });
      expect(again.counts.rowsWritten).toBe(0);
      await reopened.close();
    } finally {
      await sim.close();
    }
  });
});
