import { sql } from 'drizzle-orm';
import { accessChanges, organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../db/schema.js';
import type { Database } from './client.js';

/**
 * The columns of `users` that statements filter, join or sort on. `raw`, `custom_data`, `profile` and
 * `avatar` are only ever read back, and their statistics were most of the time ANALYZE spent on the
 * table: sorting 30,000 sampled JSON documents per column (scale 0.3: 1.07 s for the table, 0.77 s
 * without them, 0.40 s for one boolean column; the sample itself is the rest).
 */
const usersFiltered = [
  users.id, users.username, users.primaryEmail, users.primaryPhone, users.name, users.isSuspended, users.applicationId,
  users.lastSignInAt, users.createdAt, users.updatedAt, users.observedAt,
];

/**
 * `ANALYZE` of the tables a baseline loaded. Right after a bulk load the planner still has the
 * statistics of empty tables (it guessed 108 members for an organization of 5,000 and sorted them all),
 * and autovacuum, which would fix that later, is off on some servers.
 *
 * It runs after the last page, while nothing else does: three statements on connections of their own,
 * so that both cores work (one statement left one idle for ~1 s at scale 0.3, ~4 % of the baseline's
 * wall). On PGlite's single connection they run one after another.
 */
export const analyzeLoadedTables = async (db: Database): Promise<void> => {
  await Promise.all([
    db.execute(sql`analyze ${users} (${sql.join(usersFiltered.map((column) => sql.identifier(column.name)), sql`, `)})`),
    db.execute(sql`analyze ${organizationMembers}, ${organizationMemberRoles}, ${organizations}, ${organizationRoles}`),
    (async () => {
      await db.execute(sql`analyze ${accessChanges}`);
      // The same holds for the change log's BRIN index on `at`: the ranges of pages the load filled are
      // summarized by autovacuum (`autosummarize`), and until then a range read scans them all.
      await db.execute(sql`select brin_summarize_new_values('access_changes_at_idx'::regclass)`);
    })(),
  ]);
};
