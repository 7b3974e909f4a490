import express, { type Router } from 'express';
import { z } from 'zod';
import { type ApiDependencies, param, parseQuery } from '../http.js';
import { parsePagination, queryOf, sendPage } from '../pagination.js';

const dayMs = 24 * 60 * 60 * 1000;

const timestamp = z
  .string()
  .regex(/^\d+$/)
  .transform((value) => Number(value));

const recentLogsQuery = z.object({
  logKey: z.string().optional(),
  start_time: timestamp.optional(),
  end_time: timestamp.optional(),
});

/** `GET /hooks/:id/recent-logs` (`packages/core/src/routes/hook.ts`): the delivery log of a hook. */
export const createHookRoutes = (dependencies: ApiDependencies): Router => {
  const router = express.Router();

  router.get('/hooks/:id/recent-logs', (request, response) => {
    const query = queryOf(request);
    const pagination = parsePagination(query);
    const { logKey, start_time: startTime, end_time: endTime } = parseQuery(query, recentLogsQuery);
    // Logto does not check that the hook exists; an unknown id has no logs.
    const rows = dependencies.logs.list({
      hookId: param(request, 'id'),
      ...(logKey === undefined ? {} : { logKey }),
      // Default window: the last 24 hours. `start_time` is taken as inclusive.
      startTimeExclusive: startTime === undefined ? Date.now() - dayMs : startTime - 1,
      ...(endTime === undefined ? {} : { endTime }),
    });
    sendPage(request, response, pagination, rows, (row) => row);
  });

  return router;
};
