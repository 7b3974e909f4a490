import { sql } from 'drizzle-orm';
import { accessChanges, organizationMemberRoles, organizationMembers, organizationRoles, organizations, users } from '../../db/schema.js';
import type { Database } from './client.js';

/** The tables a baseline fills: access state and its change log. */
const loadedByBaseline = [users, organizations, organizationRoles, organizationMembers, organizationMemberRoles, accessChanges];

/**
 * `ANALYZE` of the tables a baseline loaded. Right after a bulk load the planner still has the
 * statistics of empty tables (it guessed 108 members for an organization of 5,000 and sorted them all),
 * and autovacuum, which would fix that later, is off on some servers.
 */
export const analyzeLoadedTables = async (db: Database): Promise<void> => {
  await db.execute(sql`analyze ${sql.join(loadedByBaseline, sql`, `)}`);
  // The same holds for the change log's BRIN index on `at`: the ranges of pages the load filled are
  // summarized by autovacuum (`autosummarize`), and until then a range read scans them all.
  await db.execute(sql`select brin_summarize_new_values('access_changes_at_idx'::regclass)`);
};
