import { sql } from 'drizzle-orm';
import { rows, type Database } from './client.js';

/** How long a missing change id is given before the transaction horizon is read for it. */
export const gapRecheckMs = 100;

/**
 * The transaction horizon: `xmin`, the oldest transaction still running (every older one is over), and
 * `xmax`, the next transaction id to be assigned.
 */
export const transactionHorizon = async (db: Database): Promise<{ xmin: bigint; xmax: bigint }> => {
  const [row] = await rows<{ xmin: string; xmax: string }>(
    db,
    sql`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin, pg_snapshot_xmax(pg_current_snapshot())::text as xmax`,
  );
  return { xmin: BigInt(row!.xmin), xmax: BigInt(row!.xmax) };
};

/**
 * Change ids are handed out before commit, so a later id can be visible while an earlier one is still in
 * flight (or was rolled back and never will be). A reader in id order must not step over a missing id
 * until every transaction that was running when the gap was seen has ended: then the id will never appear.
 * `settled(id)` answers that for the one gap a reader is waiting at; it is false until it can be stepped over.
 */
export const createGapWatch = (db: Database, options: { giveUpAfterMs?: number } = {}) => {
  let gap: { id: number; seenAt: number; xmax: bigint | null } | null = null;
  return {
    async settled(id: number): Promise<boolean> {
      const now = Date.now();
      if (!gap || gap.id !== id) {
        gap = { id, seenAt: now, xmax: null };
        return false;
      }
      if (options.giveUpAfterMs !== undefined && now - gap.seenAt >= options.giveUpAfterMs) return true;
      if (gap.xmax === null) {
        // Taken a moment after the gap was seen, so the in-flight transaction surely holds its xid by then.
        if (now - gap.seenAt < gapRecheckMs) return false;
        gap.xmax = (await transactionHorizon(db)).xmax;
        return false;
      }
      return (await transactionHorizon(db)).xmin >= gap.xmax;
    },
  };
};

/**
 * The highest change id up to which every change is committed or will never be: what an in-order reader
 * (the event sender) may act on without overtaking a change still being committed. Starts at what
 * `start` answers and only moves forward; a gap that stays open for `giveUpAfterMs` (a transaction left
 * open for that long) is stepped over, so one stuck writer cannot hold every later change back.
 */
export const createChangeFrontier = (db: Database, start: () => Promise<number>, options: { giveUpAfterMs?: number } = {}) => {
  const watch = createGapWatch(db, options);
  let frontier: number | null = null;
  return {
    /** Where the frontier stands, null before the first `advance`. */
    current: (): number | null => frontier,
    /** Moves the frontier forward to `id`, which the caller found reached without a gap (never backward). */
    reachedWithoutGap(id: number): void {
      if (frontier !== null && id > frontier) frontier = id;
    },
    async advance(): Promise<number> {
      let reached: number = frontier ?? (await start());
      try {
        for (;;) {
          const after: number = reached;
          const found = await rows<{ id: string | number }>(db, sql`select id from access_changes where id > ${after} order by id limit 5000`);
          for (const { id } of found) {
            if (Number(id) !== reached + 1 && !(await watch.settled(reached + 1))) return reached;
            reached = Number(id);
          }
          if (found.length < 5000) return reached;
        }
      } finally {
        frontier = reached;
      }
    },
  };
};

/**
 * The change log sequence's last id: every change recorded so far, committed or still being committed,
 * has an id up to it (ids are taken before commit, and a sequence is read outside any snapshot).
 */
export const lastChangeId = async (db: Database): Promise<number> => {
  const [sequence] = await rows<{ last: string | number }>(
    db,
    sql`select case when is_called then last_value else 0 end as last from access_changes_id_seq`,
  );
  return Number(sequence!.last);
};

/** How long `settledChangeId` waits for the transactions that may hold an earlier change id. */
export const settleWaitMs = 250;

/** Pause between two looks at the open transactions while `settledChangeId` waits. */
const settlePollMs = 5;

/** The last id `settledChangeId` proved per database: what it answers when it cannot prove a newer one in time. */
const provedChangeIds = new WeakMap<Database, number>();

/**
 * A sequence's last id seen with the transactions then open that may hold an id up to it: proved once
 * none of them is open any more.
 */
type Observation = { last: number; open: Set<string> };

/**
 * Observations `settledChangeId` could not prove in time, per database, oldest first. A later call proves
 * one once its transactions have ended, even while transactions begun after it are open: without them, one
 * long transaction that has ended left every call answering the last id proved before it (0 at first),
 * and a reconcile then read all of an organization's member changes.
 */
const unprovedObservations = new WeakMap<Database, Observation[]>();

/** Unproved observations kept per database: the newest, which prove the highest ids. */
const unprovedKept = 32;

/** Records `last` as proved if it is higher than what was proved before. */
const prove = (db: Database, last: number) => provedChangeIds.set(db, Math.max(last, provedChangeIds.get(db) ?? 0));

/** Proves the unproved observations none of whose transactions is among those open now. */
const proveEnded = (db: Database, openNow: Set<string>) => {
  const observations = unprovedObservations.get(db);
  if (!observations) return;
  for (const observation of observations) {
    for (const xid of observation.open) if (!openNow.has(xid)) observation.open.delete(xid);
    if (observation.open.size === 0) prove(db, observation.last);
  }
  const proved = provedChangeIds.get(db) ?? 0;
  unprovedObservations.set(db, observations.filter((observation) => observation.last > proved));
};

/**
 * The xids of the transactions open in this database: each holds the lock on its own xid until it ends.
 * Not the transaction horizon, which spans every database of the server: there, one long transaction
 * of another application (or another test database) held every answer back.
 */
const openTransactionIds = async (db: Database): Promise<Set<string>> => {
  const open = new Set(
    (
      await rows<{ xid: string }>(
        db,
        sql`select l.transactionid::text as xid from pg_locks l join pg_stat_activity a on a.pid = l.pid
          where l.locktype = 'transactionid' and l.mode = 'ExclusiveLock' and l.granted
            and a.datid = (select oid from pg_database where datname = current_database())`,
      )
    ).map((row) => row.xid),
  );
  proveEnded(db, open);
  return open;
};

/**
 * A change id such that every change with an id up to it is committed or never will be: a reader that
 * takes it before reading some state knows that any change it will find after it may be missing from
 * that state. The change log sequence's last id, once every transaction that held an xid when it was
 * read has ended (a writer records its changes after writing the rows they describe, so a transaction
 * holding a change id holds an xid). A transaction still open after `settleWaitMs` is not waited for:
 * the answer is then the highest id proved so far, by this call's earlier ones or by an observation of
 * theirs whose transactions have all ended since (0 at first), which only makes the reader look further back.
 */
export const settledChangeId = async (db: Database): Promise<number> => {
  const last = await lastChangeId(db);
  // Looked at after the sequence was read: a transaction that took an id by then is among these.
  const open = await openTransactionIds(db);
  const deadline = Date.now() + settleWaitMs;
  while (open.size > 0) {
    if (Date.now() >= deadline) {
      const observations = [...(unprovedObservations.get(db) ?? []), { last, open }];
      unprovedObservations.set(db, observations.slice(-unprovedKept));
      return provedChangeIds.get(db) ?? 0;
    }
    await new Promise((resolve) => setTimeout(resolve, settlePollMs));
    const still = await openTransactionIds(db);
    for (const xid of open) if (!still.has(xid)) open.delete(xid);
  }
  prove(db, last);
  return last;
};
