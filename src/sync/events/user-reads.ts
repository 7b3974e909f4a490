import { findUsersBatchSize, type LogtoUser } from '../../logto/index.js';
import { applyUserSnapshots, removeUsers, type ChangeContext } from '../apply/index.js';
import type { SyncDeps } from '../context.js';
import type { BaseContext } from './common.js';

export type UserReadOptions = {
  /** Batched reads (`GET /users?search.id=…`, ≤ 100 ids each) in flight or waiting for the budget at once. Default 4. */
  maxBatchesInFlight?: number;
  /** How long a partly filled batch waits for more ids before it is sent. Default 5 ms. */
  lingerMs?: number;
  /**
   * A partly filled batch goes at most this long (ms) after the previous one. Default 200: a steady
   * trickle (100 sign-ins a second) then costs at most five requests a second, a quarter of the default
   * budget, instead of one per claim, and leaves the rest to the other readers. Full batches go at once.
   */
  partialSpacingMs?: number;
  /** Completed reads remembered (with the user read), so a delivery that arrived before one needs no read of its own. Default 10,000. */
  remembered?: number;
};

/** What a read found: the user as Logto has it now, or null when Logto no longer has it (then it was removed). */
export type UserReadResult = {
  user: LogtoUser | null;
  observedAt: Date;
  /** The read brought in a user the database did not hold (told only to the deliveries that read or joined it). */
  created: boolean;
};

export type UserReads = {
  /**
   * Makes the stored user equal to Logto's by a read that started at or after `notBefore` (epoch ms of
   * this process's clock; the delivery asking was received before it), and resolves once that read is
   * applied. A read already queued, or in flight and started late enough, serves the call; so does one
   * already done, started late enough (nothing is read again). Otherwise the user joins the next batch
   * of `GET /users?search.id=…`: up to 100 users per request, in the one request budget.
   */
  refresh(userId: string, base: BaseContext, notBefore: number): Promise<UserReadResult>;
  /** Batched requests sent so far (for tests and metrics). */
  requests(): number;
};

type Waiter = { resolve: (result: UserReadResult) => void; reject: (error: unknown) => void };
type Pending = { base: BaseContext; waiters: Waiter[] };
type Running = { startedAt: number; done: Promise<UserReadResult> };

/**
 * The per-process coalescer and batcher of user reads caused by deliveries (partial `User.Data.Updated`,
 * `PostSignIn`/`PostRegister`, membership events naming unknown users). Under Logto's request budget a
 * backlog of such deliveries then costs one request per hundred users instead of one per delivery.
 */
export const createUserReads = (deps: SyncDeps, options: UserReadOptions = {}): UserReads => {
  const maxBatches = Math.max(1, options.maxBatchesInFlight ?? 4);
  const lingerMs = options.lingerMs ?? 5;
  const partialSpacingMs = Math.max(0, options.partialSpacingMs ?? 200);
  let lastPartialAt = Number.NEGATIVE_INFINITY;
  const remembered = Math.max(0, options.remembered ?? 10_000);
  /** Users waiting for the next batch, in the order they were asked for. */
  const pending = new Map<string, Pending>();
  const running = new Map<string, Running>();
  /** Reads applied: start time and result, oldest first (Map insertion order). */
  const done = new Map<string, { startedAt: number; result: UserReadResult }>();
  let batchesInFlight = 0;
  let requests = 0;
  let timer: NodeJS.Timeout | null = null;

  const remember = (userId: string, startedAt: number, result: UserReadResult) => {
    done.delete(userId);
    done.set(userId, { startedAt, result });
    while (done.size > remembered) done.delete(done.keys().next().value as string);
  };

  const applyBatch = async (batch: [string, Pending][], startedAt: number): Promise<Map<string, UserReadResult>> => {
    const observedAt = new Date(startedAt);
    const found = await deps.logto.findUsersByIds(batch.map(([userId]) => userId));
    const byId = new Map(found.map((user) => [user.id, user]));
    const contextOf = (base: BaseContext): ChangeContext => ({ ...base, observedAt });
    const present = batch.filter(([userId]) => byId.has(userId));
    const created = new Set<string>();
    if (present.length > 0) {
      const { outcomes } = await applyUserSnapshots(
        deps.database.db,
        present.map(([userId, entry]) => ({ user: byId.get(userId)!, context: contextOf(entry.base) })),
      );
      present.forEach(([userId], index) => {
        if (outcomes[index] === 'created') created.add(userId);
      });
    }
    // Absent from an exact id search: the user is gone. Each removal is recorded for its own delivery.
    for (const [userId, entry] of batch) {
      if (!byId.has(userId)) await removeUsers(deps.database.db, [userId], contextOf(entry.base));
    }
    return new Map(batch.map(([userId]) => [userId, { user: byId.get(userId) ?? null, observedAt, created: created.has(userId) }]));
  };

  /** Sends batches while there is room; `fullOnly`: only full ones (a partial one waits for the linger). */
  const send = (fullOnly: boolean) => {
    while (batchesInFlight < maxBatches && (pending.size >= findUsersBatchSize || (!fullOnly && pending.size > 0))) {
      const batch = [...pending.entries()].slice(0, findUsersBatchSize);
      for (const [userId] of batch) pending.delete(userId);
      if (batch.length < findUsersBatchSize) lastPartialAt = Date.now();
      batchesInFlight += 1;
      requests += 1;
      // Taken before the request is queued in the budget: the read certainly starts after it.
      const startedAt = Date.now();
      const results = applyBatch(batch, startedAt);
      for (const [userId, entry] of batch) {
        const mine = results.then((all) => all.get(userId)!);
        running.set(userId, { startedAt, done: mine });
        mine.then(
          (result) => {
            remember(userId, startedAt, result);
            for (const waiter of entry.waiters) waiter.resolve(result);
          },
          (error: unknown) => {
            for (const waiter of entry.waiters) waiter.reject(error);
          },
        );
      }
      results
        .catch(() => undefined)
        .finally(() => {
          for (const [userId] of batch) if (running.get(userId)?.startedAt === startedAt) running.delete(userId);
          batchesInFlight -= 1;
          schedule();
        });
    }
  };

  function schedule() {
    if (pending.size === 0 || batchesInFlight >= maxBatches) return;
    if (pending.size >= findUsersBatchSize) send(true);
    if (pending.size === 0 || batchesInFlight >= maxBatches) return;
    timer ??= setTimeout(
      () => {
        timer = null;
        send(false);
      },
      Math.max(lingerMs, lastPartialAt + partialSpacingMs - Date.now()),
    );
  }

  return {
    refresh(userId, base, notBefore) {
      const read = done.get(userId);
      if (read && read.startedAt >= notBefore) return Promise.resolve({ ...read.result, created: false });
      const inFlight = running.get(userId);
      if (inFlight && inFlight.startedAt >= notBefore) return inFlight.done;
      return new Promise<UserReadResult>((resolve, reject) => {
        let entry = pending.get(userId);
        if (!entry) {
          entry = { base, waiters: [] };
          pending.set(userId, entry);
        }
        entry.waiters.push({ resolve, reject });
        schedule();
      });
    },
    requests: () => requests,
  };
};
