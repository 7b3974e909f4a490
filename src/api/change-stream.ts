import type { Request, Response } from 'express';
import { z } from 'zod';
import {
  accessEventTypes,
  buildAccessEvents,
  eventTypeOfKind,
  lastChangeId,
  listChangesAfter,
  type AccessEventType,
} from '../db/access-events.js';
import type { ChangeFeed } from '../db/change-feed.js';
import { createGapWatch, gapRecheckMs } from '../db/change-frontier.js';
import type { Database } from '../db/client.js';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';
import { metrics } from '../metrics.js';
import { invalidParams } from './problem.js';
import { defineRoute } from './route.js';
import { idParam } from './schemas.js';

export type ChangeStreamOptions = {
  /** Comment line sent when nothing else was, so proxies keep the connection. Default 15 s. */
  heartbeatMs?: number;
  /** Rows read per query. Default 500. */
  batchSize?: number;
};

type Filters = { userId?: string | undefined; organizationId?: string | undefined; types?: Set<AccessEventType> | undefined };

/**
 * Writes the change log from `cursor` on as Server-Sent Events until the client leaves or the feed
 * closes. Woken by the feed, it reads the log after its cursor. Ids are handed out before commit, so a
 * later id can be visible while an earlier one is still in flight: the stream never steps over a missing
 * id until the transaction horizon shows the id's transaction is over (it was rolled back), which is what
 * makes a resumed stream miss nothing.
 */
const runStream = (
  { db, feed, logger }: { db: Database; feed: ChangeFeed; logger: Logger },
  req: Request,
  res: Response,
  start: number,
  filters: Filters,
  options: ChangeStreamOptions,
) =>
  new Promise<void>((resolve) => {
    const batchSize = options.batchSize ?? 500;
    let cursor = start;
    let closed = false;
    let reading = false;
    let again = false;
    const gaps = createGapWatch(db);
    let recheck: NodeJS.Timeout | null = null;
    let lastWriteAt = Date.now();

    const write = async (text: string) => {
      lastWriteAt = Date.now();
      if (res.write(text)) return;
      await new Promise<void>((drained) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          drained();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    };

    const scheduleRecheck = () => {
      if (recheck || closed) return;
      recheck = setTimeout(() => {
        recheck = null;
        wake();
      }, gapRecheckMs);
    };

    const matches = (kind: string, userId: string | null, organizationId: string | null) => {
      if (filters.userId !== undefined && userId !== filters.userId) return false;
      if (filters.organizationId !== undefined && organizationId !== filters.organizationId) return false;
      if (filters.types && !filters.types.has(eventTypeOfKind(kind)!)) return false;
      return eventTypeOfKind(kind) !== null;
    };

    const read = async () => {
      for (;;) {
        const changes = await listChangesAfter(db, cursor, batchSize);
        if (changes.length === 0 || closed) return;
        const accepted = [];
        let expected = cursor + 1;
        let blocked = false;
        for (const change of changes) {
          if (change.id !== expected && !(await gaps.settled(expected))) {
            blocked = true;
            break;
          }
          accepted.push(change);
          expected = change.id + 1;
        }
        if (accepted.length > 0) {
          const events = await buildAccessEvents(
            db,
            accepted.filter((change) => matches(change.kind, change.userId, change.organizationId)),
          );
          for (const event of events) {
            if (closed) return;
            await write(`id: ${event.data.changeId}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
          }
          cursor = accepted[accepted.length - 1]!.id;
        }
        if (blocked) {
          scheduleRecheck();
          return;
        }
        if (changes.length < batchSize) return;
      }
    };

    function wake() {
      if (closed) return;
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      void (async () => {
        try {
          do {
            again = false;
            await read();
          } while (again && !closed);
        } catch (error) {
          logger.warn({ err: error }, 'change stream read failed');
          // The next wake-up (notification, safety poll or heartbeat) tries again from the same cursor.
        } finally {
          reading = false;
        }
      })();
    }

    const heartbeatMs = options.heartbeatMs ?? 15_000;
    const heartbeat = setInterval(() => {
      if (Date.now() - lastWriteAt >= heartbeatMs - 10) void write(': heartbeat\n\n');
      wake();
    }, heartbeatMs);

    const finish = () => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      if (recheck) clearTimeout(recheck);
      unsubscribe();
      metrics.eventStreams.dec();
      if (!res.writableEnded) res.end();
      resolve();
    };
    const unsubscribe = feed.subscribe({ wake, close: finish });
    metrics.eventStreams.inc();
    req.once('close', finish);
    res.once('close', finish);
    void write('retry: 1000\n\n').then(wake);
  });

const lastEventIdPattern = /^\d{1,15}$/;

export const changeStreamRoutes = (options: ChangeStreamOptions = {}) => [
  defineRoute({
    method: 'get',
    path: '/v1/changes/stream',
    operationId: 'streamAccessChanges',
    summary: 'Every access change, live, as Server-Sent Events',
    description:
      'Each change is an event whose `id` is the change id and whose `event` is its type; `data` is the event body the ' +
      'webhooks carry. Resume with the `Last-Event-ID` header (or `after`): nothing is missed or repeated. Without ' +
      'either, the stream starts with the changes made from now on. A comment line is sent every 15 seconds.',
    tags: ['events', 'history'],
    auth: 'read',
    query: z.strictObject({
      after: z
        .string({ error: 'must be a change id' })
        .regex(/^\d{1,15}$/, 'must be a change id')
        .transform(Number)
        .optional()
        .describe('Start after this change id (the Last-Event-ID header wins when both are given)'),
      userId: idParam('user').optional().describe('Only changes about this user'),
      organizationId: idParam('organization').optional().describe('Only changes about this organization'),
      types: z
        .string({ error: 'must be given once' })
        .optional()
        .describe(`Comma-separated event types: ${accessEventTypes.join(', ')}`),
    }),
    success: { status: 200, description: 'An endless stream of events', contentType: 'text/event-stream' },
    errors: [503],
    handler: async ({ deps, query, req, res }) => {
      const feed = deps.events?.feed;
      if (!feed) throw new AppError(503, 'unavailable', 'The live change stream is not available on this server');
      let types: Set<AccessEventType> | undefined;
      if (query.types !== undefined) {
        const names = query.types.split(',').map((name) => name.trim()).filter(Boolean);
        const unknown = names.filter((name) => !(accessEventTypes as readonly string[]).includes(name));
        if (names.length === 0 || unknown.length > 0) {
          throw invalidParams([{ name: 'types', reason: `must be a comma-separated list of ${accessEventTypes.join(', ')}` }]);
        }
        types = new Set(names as AccessEventType[]);
      }
      const header = req.get('last-event-id');
      if (header !== undefined && !lastEventIdPattern.test(header.trim())) {
        throw new AppError(400, 'invalid_params', 'Invalid parameter: Last-Event-ID must be a change id', {
          invalid_params: [{ name: 'Last-Event-ID', reason: 'must be a change id' }],
        });
      }
      const start = header !== undefined ? Number(header.trim()) : (query.after ?? (await lastChangeId(deps.db)));
      res.status(200);
      res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
      res.setHeader('Cache-Control', 'no-cache, no-transform');
      res.setHeader('X-Accel-Buffering', 'no');
      req.socket.setTimeout(0);
      req.socket.setNoDelay(true);
      res.flushHeaders();
      await runStream({ db: deps.db, feed, logger: deps.logger }, req, res, start, { userId: query.userId, organizationId: query.organizationId, types }, options);
    },
  }),
];
