import { and, eq, inArray, max } from 'drizzle-orm';
import { accessChanges } from '../../../db/schema.js';
import type { Database } from '../../db/client.js';
import type { LogtoUser } from '../../logto/index.js';
import { applyTransaction, writeUsersRecordingChanges, type ApplyResult, type ChangeContext, type ChangeRecord } from './changes.js';
import { readCompared, toUserRow, userChanges, userRowsUpsert, type ComparedRow } from './users.js';

/** One user snapshot with the context it came with (its delivery, actor and observation time). */
export type UserSnapshot = {
  user: LogtoUser;
  context: ChangeContext;
  /** An update is not a creation: a user the database does not hold is left alone and reported `not_stored`. */
  onlyIfStored?: boolean;
};

/**
 * `created`: stored, and the database did not hold the user before; `written`: stored as given;
 * `unchanged`: nothing differed, or a newer copy or a later deletion won; `not_stored`: see `onlyIfStored`.
 */
export type UserSnapshotOutcome = 'created' | 'written' | 'unchanged' | 'not_stored';

/**
 * `applyUsers` for snapshots that each carry their own context: many webhook deliveries (or the users of
 * one batched read, each on behalf of its own delivery) compared in one read and written in one
 * transaction, each change recorded with its own delivery and observation time. The same rules: only
 * what differs is written, a copy Logto updated later is never replaced, and a deletion recorded after a
 * snapshot was observed keeps the user deleted. Snapshots of one user are applied in the order given.
 */
export const applyUserSnapshots = async (
  db: Database,
  snapshots: UserSnapshot[],
): Promise<{ outcomes: UserSnapshotOutcome[]; result: ApplyResult }> => {
  const outcomes: UserSnapshotOutcome[] = snapshots.map(() => 'unchanged');
  const result: ApplyResult = { changes: [], rowsWritten: 0 };
  // Rounds of distinct users: a user named twice gets its second snapshot after its first one is written.
  let remaining = snapshots.map((_, index) => index);
  while (remaining.length > 0) {
    const seen = new Set<string>();
    const round: number[] = [];
    const later: number[] = [];
    for (const index of remaining) {
      const id = snapshots[index]!.user.id;
      if (seen.has(id)) later.push(index);
      else {
        seen.add(id);
        round.push(index);
      }
    }
    await applyRound(db, snapshots, round, outcomes, result);
    remaining = later;
  }
  return { outcomes, result };
};

const applyRound = async (
  db: Database,
  snapshots: UserSnapshot[],
  round: number[],
  outcomes: UserSnapshotOutcome[],
  result: ApplyResult,
): Promise<void> => {
  if (round.length === 0) return;
  const rowsByIndex = new Map(round.map((index) => [index, toUserRow(snapshots[index]!.user, snapshots[index]!.context.observedAt)]));
  const ids = round.map((index) => snapshots[index]!.user.id);
  const compare = (storedById: Map<string, ComparedRow>, indexes: number[]) => {
    const writes = new Map<number, ChangeRecord[]>();
    for (const index of indexes) {
      const { context, onlyIfStored } = snapshots[index]!;
      const row = rowsByIndex.get(index)!;
      const current = storedById.get(row.id);
      if (!current && onlyIfStored) {
        outcomes[index] = 'not_stored';
        continue;
      }
      const changes = userChanges(current, row, context);
      if (changes) writes.set(index, changes);
    }
    return writes;
  };
  // No comparison outside the transaction first: deliveries and reads announce changes, so nearly every
  // round writes, and a read before the transaction would cost each one a round trip more.
  const first = snapshots[round[0]!]!.context;
  // Compared under the entity locks (taken as the transaction begins): another writer of these users may have committed since.
  const applied = await applyTransaction(db, first, async (tx, last) => {
    const storedById = await readCompared(tx, ids);
    const writes = compare(storedById, round);
    if (writes.size === 0) return { written: new Set<string>(), changes: [] as ChangeRecord[], rowsWritten: 0, writes, storedById };
    const created = [...writes.keys()].filter((index) => !storedById.has(snapshots[index]!.user.id));
    const deletedAt = new Map<string, number>();
    if (created.length > 0) {
      const deletions = await tx
        .select({ userId: accessChanges.userId, at: max(accessChanges.observedAt) })
        .from(accessChanges)
        .where(
          and(
            eq(accessChanges.kind, 'user.deleted'),
            inArray(
              accessChanges.userId,
              created.map((index) => snapshots[index]!.user.id),
            ),
          ),
        )
        .groupBy(accessChanges.userId);
      for (const { userId, at } of deletions) if (userId && at) deletedAt.set(userId, new Date(at).getTime());
    }
    const writing = [...writes.keys()].filter((index) => {
      const { user, context } = snapshots[index]!;
      const deleted = deletedAt.get(user.id);
      return deleted === undefined || deleted <= context.observedAt.getTime();
    });
    if (writing.length === 0) return { written: new Set<string>(), changes: [] as ChangeRecord[], rowsWritten: 0, writes, storedById };
    // The guard makes a concurrent writer holding a newer copy win, whatever the order of commits; the
    // changes of the users it wrote are recorded by the same statement.
    const { written, recorded } = await writeUsersRecordingChanges(
      tx,
      userRowsUpsert(writing.map((index) => rowsByIndex.get(index)!)),
      writing.flatMap((index) => writes.get(index) ?? []),
      first,
      last,
    );
    return { written, changes: recorded, rowsWritten: written.size + recorded.length, writes, storedById };
  }, { entity: 'user', ids });
  for (const index of applied.writes.keys()) {
    const id = snapshots[index]!.user.id;
    if (applied.written.has(id)) outcomes[index] = applied.storedById.has(id) ? 'written' : 'created';
  }
  result.changes.push(...applied.changes);
  result.rowsWritten += applied.rowsWritten;
};
