import { sql } from 'drizzle-orm';
import { rows, type DatabaseHandle } from './client.js';
import { changesChannel, parseChangeNotice } from './outbox.js';

/**
 * One wake-up source per process for everything that follows the change log live. It LISTENs on one
 * connection of its own (re-opened when lost) to the NOTIFY each applying transaction sends at commit,
 * and, as a safety net for notifications lost while that connection was down, polls the largest change
 * id now and then. Listeners only learn "something new may be there": they read the change log from their
 * own cursor, which stays the source of truth.
 */
export type ChangeFeed = {
  /**
   * `wake` runs on each notification; `close` when the feed shuts down (streams end then). `news.outboxRows`
   * is false when the commit is known to have queued no outbox rows (the safety poll and a reconnection
   * cannot tell, and say true).
   */
  subscribe(listener: FeedListener): () => void;
  listeners(): number;
  close(): Promise<void>;
};

export type FeedNews = { outboxRows: boolean };
export type FeedListener = { wake(news: FeedNews): void; close(): void };

/** What a wake-up that cannot tell what was committed says. */
const anything: FeedNews = { outboxRows: true };

export const startChangeFeed = async (
  handle: DatabaseHandle,
  options: { safetyPollMs?: number; onError?: (error: unknown) => void } = {},
): Promise<ChangeFeed> => {
  const listeners = new Set<FeedListener>();
  const wakeAll = (news: FeedNews = anything) => {
    for (const listener of listeners) listener.wake(news);
  };
  let lastSeen = 0;
  const unlisten = await handle.listen(
    changesChannel,
    (payload) => {
      const notice = parseChangeNotice(payload);
      if (notice.lastChangeId !== null && notice.lastChangeId > lastSeen) lastSeen = notice.lastChangeId;
      wakeAll({ outboxRows: notice.outboxRows });
    },
    () => wakeAll(),
  );
  let polling = false;
  const poll = setInterval(() => {
    if (polling || listeners.size === 0) return;
    polling = true;
    rows<{ id: string | number | null }>(handle.db, sql`select max(id) as id from access_changes`)
      .then(([row]) => {
        const id = Number(row?.id ?? 0);
        if (id > lastSeen) {
          lastSeen = id;
          wakeAll();
        }
      })
      .catch((error: unknown) => options.onError?.(error))
      .finally(() => {
        polling = false;
      });
  }, options.safetyPollMs ?? 5000);
  poll.unref();
  let closed = false;
  return {
    subscribe(listener) {
      if (closed) {
        listener.close();
        return () => {};
      }
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    listeners: () => listeners.size,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(poll);
      for (const listener of [...listeners]) listener.close();
      listeners.clear();
      await unlisten().catch(() => {});
    },
  };
};
