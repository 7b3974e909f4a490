import { STATUS_CODES } from 'node:http';
import type { Request, Response } from 'express';

/**
 * RFC 9457 problem details for the receiver. The router answers every refusal itself, so it behaves the
 * same mounted in the API app or alone; the shape matches the app's (`src/api/problem.ts`).
 */
export const problemContentType = 'application/problem+json';

export type WebhookProblem = {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance: string;
  requestId?: string;
};

export const sendProblem = (req: Request, res: Response, status: number, code: string, detail: string): void => {
  const requestId = typeof res.locals.requestId === 'string' ? res.locals.requestId : undefined;
  const body: WebhookProblem = {
    type: `urn:logto-access-sync:problem:${code}`,
    title: STATUS_CODES[status] ?? 'Error',
    status,
    detail,
    code,
    instance: req.originalUrl.split('?')[0] ?? req.originalUrl,
    ...(requestId ? { requestId } : {}),
  };
  res.status(status).type(problemContentType).send(JSON.stringify(body));
};
