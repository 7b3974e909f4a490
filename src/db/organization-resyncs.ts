import { sql } from 'drizzle-orm';
import { organizationResyncs } from '../../db/schema.js';
import { rows, type Database } from './client.js';

/**
 * The shared marks of organization member re-reads (`organization_resyncs`), so that the replicas
 * together re-read an organization once for the membership deliveries that arrive close together,
 * whichever replica handles them. Times stay in PostgreSQL (one clock, microseconds): callers hold them
 * as the text PostgreSQL gave.
 */

/** Records a request for a re-read of the organization's members; returns its time (PostgreSQL's text). */
export const requestOrganizationResync = async (db: Database, organizationId: string): Promise<string> => {
  const [row] = await rows<{ at: string }>(
    db,
    sql`insert into ${organizationResyncs} (organization_id, requested_at) values (${organizationId}, now())
      on conflict (organization_id) do update set requested_at = greatest(${organizationResyncs.requestedAt}, excluded.requested_at)
      returning now()::text as at`,
  );
  return row!.at;
};

/**
 * Claims the re-read when one is owed (a request newer than the start of the last finished re-read) and
 * no replica holds it under a live lease. Row-level: `FOR UPDATE SKIP LOCKED` lets a replica that finds
 * the row being claimed move on at once instead of waiting.
 */
export const claimOrganizationResync = async (db: Database, organizationId: string, claim: string, leaseMs: number): Promise<boolean> => {
  const claimed = await rows<{ organization_id: string }>(
    db,
    sql`update ${organizationResyncs} set claim = ${claim}, started_at = now(),
        lease_until = now() + make_interval(secs => ${leaseMs / 1000})
      where organization_id = (
        select organization_id from ${organizationResyncs}
        where organization_id = ${organizationId}
          and (lease_until is null or lease_until < now())
          and requested_at > coalesce(done_started_at, '-infinity'::timestamptz)
        for update skip locked)
      returning organization_id`,
  );
  return claimed.length > 0;
};

/** Keeps a long re-read's claim alive. */
export const extendOrganizationResync = async (db: Database, organizationId: string, claim: string, leaseMs: number): Promise<void> => {
  await db.execute(
    sql`update ${organizationResyncs} set lease_until = now() + make_interval(secs => ${leaseMs / 1000})
      where organization_id = ${organizationId} and claim = ${claim}`,
  );
};

/** The claimed re-read finished: every request made up to its start is served. */
export const finishOrganizationResync = async (db: Database, organizationId: string, claim: string): Promise<void> => {
  await db.execute(
    sql`update ${organizationResyncs}
      set done_started_at = greatest(coalesce(done_started_at, '-infinity'::timestamptz), started_at), lease_until = null, claim = null
      where organization_id = ${organizationId} and claim = ${claim}`,
  );
};

/** The claimed re-read failed: the claim is given up so that another attempt (here or elsewhere) can take it. */
export const releaseOrganizationResync = async (db: Database, organizationId: string, claim: string): Promise<void> => {
  await db.execute(
    sql`update ${organizationResyncs} set lease_until = null, claim = null where organization_id = ${organizationId} and claim = ${claim}`,
  );
};

/** Whether a re-read that started at or after `requestedAt` (every one of them, when several requests share it) has finished. */
export const organizationResyncServed = async (
  db: Database,
  organizationId: string,
  requestedAt: string | readonly string[],
): Promise<boolean> => {
  const marks = typeof requestedAt === 'string' ? [requestedAt] : [...requestedAt];
  const [row] = await rows<{ served: boolean }>(
    db,
    sql`select coalesce(done_started_at >= (select max(mark) from unnest(${sql.param(marks)}::timestamptz[]) as marks(mark)), false) as served
      from ${organizationResyncs} where organization_id = ${organizationId}`,
  );
  return row?.served ?? false;
};
