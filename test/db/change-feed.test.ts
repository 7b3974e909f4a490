import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startChangeFeed, type ChangeFeed, type FeedNews } from '../../src/db/change-feed.js';
import { parseChangeNotice } from '../../src/db/outbox.js';
import { recordChanges } from '../../src/sync/apply/changes.js';
import { createEventSubscription } from '../../src/sync/event-subscriptions.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const context = { source: 'webhook' as const, observedAt: new Date() };

describe('the change feed', () => {
  let database: TestDatabase;
  let feed: ChangeFeed;
  let heard: FeedNews[] = [];
  let waiters: (() => void)[] = [];
  const next = async () => {
    while (heard.length === 0) await new Promise<void>((resolve) => waiters.push(resolve));
    return heard.shift()!;
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    feed = await startChangeFeed(database, { safetyPollMs: 60_000 });
    feed.subscribe({
      wake: (news) => {
        heard.push(news);
        for (const wake of waiters.splice(0)) wake();
      },
      close: () => {},
    });
  });
  afterAll(async () => {
    await feed.close();
    await database.drop();
  });

  // The event sender is woken by `outboxRows` only: a commit that queued nothing for it costs no claim.
  it('tells whether a commit queued outbox rows: not without a subscription, and once there is one', async () => {
    await recordChanges(database.db, [{ kind: 'user.created', userId: 'feed_quiet' }], context);
    expect(await next()).toEqual({ outboxRows: false });

    await createEventSubscription(database.db, { url: 'http://127.0.0.1:9/events' }, { allowPrivateUrls: true });
    await recordChanges(database.db, [{ kind: 'user.created', userId: 'feed_sent' }], context);
    expect(await next()).toEqual({ outboxRows: true });
    heard = [];
    waiters = [];
  });

  it('reads a notification without the count (a replica from before it) as one that may have queued rows', () => {
    expect(parseChangeNotice('1234')).toEqual({ lastChangeId: 1234, outboxRows: true });
    expect(parseChangeNotice('1234:0')).toEqual({ lastChangeId: 1234, outboxRows: false });
    expect(parseChangeNotice('1234:3')).toEqual({ lastChangeId: 1234, outboxRows: true });
    expect(parseChangeNotice(':0')).toEqual({ lastChangeId: null, outboxRows: false });
    expect(parseChangeNotice('')).toEqual({ lastChangeId: null, outboxRows: true });
  });
});
