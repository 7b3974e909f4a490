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

/** `ANALYZE` of `users` on the columns statements filter on (see `usersFiltered`). */
export const analyzeLoadedUsers = async (db: Database): Promise<void> => {
  await db.execute(sql`analyze ${users} (${sql.join(usersFiltered.map((column) => sql.identifier(column.name)), sql`, `)})`);
};

/**
 * `ANALYZE` of the tables a baseline loaded. Right after a bulk load the planner still has the
 * statistics of empty tables (it guessed 108 members for an organization of 5,000 and sorted them all),
 * and autovacuum, which would fix that later, is off on some servers.
 *
 * Up to three statements on connections of their own, so that both cores work (one statement after the
 * last page left one idle for ~1 s at scale 0.3, ~4 % of the baseline's wall). On PGlite's single
 * connection they run one after another. `users: false` leaves out `users`, analyzed already: into an
 * empty database the runner analyzes it once its list is loaded, and the rest beside the removals (see
 * `loadedStatistics`).
 */
export const analyzeLoadedTables = async (db: Database, { users: withUsers = true }: { users?: boolean } = {}): Promise<void> => {
  await Promise.all([
    withUsers ? analyzeLoadedUsers(db) : undefined,
    db.execute(sql`analyze ${organizationMembers}, ${organizationMemberRoles}, ${organizations}, ${organizationRoles}`),
    (async () => {
      await db.execute(sql`analyze ${accessChanges}`);
      await summarizeLoadedChanges(db);
    })(),
  ]);
};

/**
 * The change log's BRIN index on `at` needs the same: the ranges of pages the load filled are summarized
 * by autovacuum (`autosummarize`), and until then a range read scans them all. Ranges summarized once are
 * kept up to date by later inserts, so an early call (`loadedStatistics`) leaves the final one only the
 * ranges filled since.
 */
export const summarizeLoadedChanges = async (db: Database): Promise<void> => {
  await db.execute(sql`select brin_summarize_new_values('access_changes_at_idx'::regclass)`);
};
