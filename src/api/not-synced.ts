import type { Request } from 'express';
import { sendProblem } from './problem.js';
import type { Route } from './route.js';

/** Seconds a caller is asked to wait before asking again while the first full sync runs. */
export const notSyncedRetryAfterSeconds = 10;

/**
 * The reads that answer from the access state: until the first full sync has succeeded they would answer
 * "not a member" for members not loaded yet, so they answer 503 `not_synced` instead. The sync routes
 * (progress of that very sync) and the inbox's dead letters answer throughout.
 */
export const needsFirstSync = (route: Pick<Route, 'method' | 'path' | 'auth'>): boolean =>
  route.method === 'get' && route.auth !== 'none' && !route.path.startsWith('/v1/sync/') && !route.path.startsWith('/v1/webhooks/');

export const sendNotSynced = (req: Request): void => {
  req.res!.setHeader('Retry-After', String(notSyncedRetryAfterSeconds));
  sendProblem(
    req,
    503,
    'not_synced',
    'The first full sync of the Logto tenant has not finished yet; follow it at /v1/sync/status',
    { retryAfterSeconds: notSyncedRetryAfterSeconds },
  );
};
