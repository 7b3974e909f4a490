import { sql, type SQL } from 'drizzle-orm';
import { textArray } from '../../db/prepared.js';

/**
 * The statement that serialises writers of the same users, organizations or organization roles until the
 * transaction ends (advisory locks, taken in id order so two writers never wait on each other in a
 * circle); null when there is nothing to lock or set. Webhooks, a full sync, the role sweep and
 * provisioning may apply the same entity at once, on one replica or several; an apply that compares under
 * this lock sees what the other one committed, so each change is written and recorded once. Works for
 * rows that do not exist yet, which row locks cannot do. `settings` (`set_config` calls) are made by the
 * same statement. A transaction sends it first (see `applyTransaction`), with others where it can.
 */
export const entityLocks = (
  entity: 'user' | 'organization' | 'organization_role',
  ids: readonly string[],
  settings?: SQL,
): SQL | null => {
  const sorted = [...new Set(ids)].sort();
  if (sorted.length === 0) return settings ? sql`select ${settings}` : null;
  // unnest yields the ids in array order, so the locks are taken in that order.
  const locks = sql`select pg_advisory_xact_lock(hashtextextended(${entity} || ':' || id, 0)) from unnest(${sql.param(textArray(sorted))}::text[]) as entity(id)`;
  // The transaction's settings ride with the locks: one round trip fewer for every apply that starts with them.
  return settings ? sql`select ${settings}, (select count(*) from (${locks}) as taken) as locked` : locks;
};
