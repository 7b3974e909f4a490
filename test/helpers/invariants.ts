import { asc, sql } from 'drizzle-orm';
import {
  accessChanges,
  eventOutbox,
  organizationMemberRoles,
  organizationMembers,
  organizationResyncs,
  syncRuns,
  webhookDeliveries,
} from '../../db/schema.js';
import { rows, type Database } from '../../src/db/client.js';
import type { RelayedDelivery } from './webhook-relay.js';

/** Kinds that open and close a fact about one entity: recorded twice in a row, one change was applied twice. */
const toggles: Record<string, { key: (change: typeof accessChanges.$inferSelect) => string; state: boolean }> = {
  'user.created': { key: (c) => `user:${c.userId}`, state: true },
  'user.deleted': { key: (c) => `user:${c.userId}`, state: false },
  'user.suspended': { key: (c) => `suspended:${c.userId}`, state: true },
  'user.unsuspended': { key: (c) => `suspended:${c.userId}`, state: false },
  'organization.created': { key: (c) => `organization:${c.organizationId}`, state: true },
  'organization.deleted': { key: (c) => `organization:${c.organizationId}`, state: false },
  'organization_role.created': { key: (c) => `organization_role:${c.organizationRoleId}`, state: true },
  'organization_role.deleted': { key: (c) => `organization_role:${c.organizationRoleId}`, state: false },
  'member.added': { key: (c) => `member:${c.organizationId}/${c.userId}`, state: true },
  'member.removed': { key: (c) => `member:${c.organizationId}/${c.userId}`, state: false },
  'member_role.granted': { key: (c) => `member_role:${c.organizationId}/${c.userId}/${c.organizationRoleId}`, state: true },
  'member_role.revoked': { key: (c) => `member_role:${c.organizationId}/${c.userId}/${c.organizationRoleId}`, state: false },
};

/**
 * What is wrong with the change log: a grant, revoke, creation or deletion recorded twice in a row for
 * the same entity (one change applied twice), or memberships and member roles that replaying the log
 * does not give back. An empty list means every change was recorded exactly once.
 */
export const changeLogProblems = async (db: Database): Promise<string[]> => {
  const problems: string[] = [];
  const last = new Map<string, { state: boolean; id: number }>();
  const history = new Map<string, string[]>();
  const events = new Map(
    (await db.select({ id: webhookDeliveries.id, event: webhookDeliveries.event }).from(webhookDeliveries)).map((row) => [row.id, row.event]),
  );
  for (const change of await db.select().from(accessChanges).orderBy(asc(accessChanges.id))) {
    const toggle = toggles[change.kind];
    if (!toggle) continue;
    const key = toggle.key(change);
    const previous = last.get(key);
    const seen = history.get(key) ?? history.set(key, []).get(key)!;
    const reason = (change.details as { reason?: unknown } | null)?.reason;
    const delivery = change.deliveryId ? ` (delivery ${change.deliveryId} ${events.get(change.deliveryId)})` : '';
    seen.push(`${change.id} ${change.kind} by ${change.source}${delivery}${reason ? ` because ${String(reason)}` : ''}`);
    if (previous && previous.state === toggle.state) {
      problems.push(`${change.kind} ${key} recorded again: ${seen.join(', ')}`);
    }
    last.set(key, { state: toggle.state, id: change.id });
  }
  const open = (prefix: string) =>
    [...last.entries()]
      .filter(([key, value]) => key.startsWith(prefix) && value.state)
      .map(([key]) => key.slice(prefix.length))
      .sort();
  const members = (await db.select().from(organizationMembers)).map((m) => `${m.organizationId}/${m.userId}`).sort();
  const roles = (await db.select().from(organizationMemberRoles))
    .map((r) => `${r.organizationId}/${r.userId}/${r.organizationRoleId}`)
    .sort();
  if (JSON.stringify(open('member:')) !== JSON.stringify(members)) problems.push('replaying member changes does not give the stored memberships');
  if (JSON.stringify(open('member_role:')) !== JSON.stringify(roles)) problems.push('replaying member role changes does not give the stored member roles');
  return problems;
};

/**
 * Runs left `running`; work still claimed (deliveries and outbox rows `processing`, organization member
 * re-reads under a lease that has not run out); and advisory locks held in this database.
 */
export const leftovers = async (db: Database) => {
  const running = await db.$count(syncRuns, sql`${syncRuns.status} = 'running'`);
  const claimed =
    (await db.$count(webhookDeliveries, sql`${webhookDeliveries.status} = 'processing'`)) +
    (await db.$count(eventOutbox, sql`${eventOutbox.status} = 'processing'`)) +
    (await db.$count(organizationResyncs, sql`${organizationResyncs.leaseUntil} > now()`));
  const [locks] = await rows<{ count: number }>(
    db,
    sql`select count(*)::int as count from pg_locks l join pg_database d on d.oid = l.database
        where l.locktype = 'advisory' and d.datname = current_database() and l.pid <> pg_backend_pid()`,
  );
  return { running, claimed, advisoryLocks: Number(locks?.count ?? 0) };
};

/**
 * Deliveries the service acknowledged (2xx) that are not settled as applied or ignored exactly once in
 * the inbox; an empty list is what "every acknowledged delivery was applied" means.
 */
export const unappliedAcknowledged = async (db: Database, relayed: RelayedDelivery[]): Promise<string[]> => {
  const stored = new Map<string, string[]>();
  for (const row of await db.select({ dedupKey: webhookDeliveries.dedupKey, status: webhookDeliveries.status }).from(webhookDeliveries)) {
    (stored.get(row.dedupKey) ?? stored.set(row.dedupKey, []).get(row.dedupKey)!).push(row.status);
  }
  return relayed
    .filter((delivery) => delivery.acknowledged)
    .filter((delivery) => {
      const statuses = stored.get(delivery.dedupKey) ?? [];
      return statuses.length !== 1 || !['applied', 'ignored'].includes(statuses[0]!);
    })
    .map((delivery) => `${delivery.event} ${delivery.dedupKey}: ${JSON.stringify(stored.get(delivery.dedupKey) ?? [])}`);
};

/** Polls `check` until it returns a value that is not undefined, or fails after `timeoutMs`. */
export const eventually = async <T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000, everyMs = 50): Promise<T> => {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (${String(lastError)})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
};
