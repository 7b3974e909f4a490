import { generateId, standardIdLength } from './ids.js';

/**
 * The `TriggerHook.<event>` log rows Logto writes for every delivery attempt chain, as served by
 * `GET /api/hooks/:id/recent-logs` (see `management-api/api-hooks-recent-logs.json`).
 */

export type HookLogResult = 'Success' | 'Error';

export interface HookLogResponse {
  statusCode: number;
  body: unknown;
}

export interface HookLogPayload {
  key: string;
  result: HookLogResult;
  error?: string;
  hookId: string;
  response?: HookLogResponse;
  hookRequest: { body: unknown };
}

export interface HookLogRow {
  id: string;
  key: string;
  payload: HookLogPayload;
  createdAt: number;
}

export interface HookLogInput {
  hookId: string;
  event: string;
  result: HookLogResult;
  error?: string;
  response?: HookLogResponse;
  requestBody: unknown;
}

export interface HookLogQuery {
  hookId: string;
  logKey?: string;
  /** Rows strictly after this time (epoch ms). */
  startTimeExclusive: number;
  /** Rows at or before this time (epoch ms). */
  endTime?: number;
}

const compareJsonbKeys = (a: string, b: string): number => {
  const lengthA = Buffer.byteLength(a);
  const lengthB = Buffer.byteLength(b);
  return lengthA === lengthB ? Buffer.compare(Buffer.from(a), Buffer.from(b)) : lengthA - lengthB;
};

/**
 * Reorders object keys as PostgreSQL's `jsonb` stores them (shorter keys first, then bytewise).
 * The log payload lives in a jsonb column, so the recorded bodies come back in this order
 * (`ip, data, path, event, hookId, …`), not in the order they were sent.
 */
export const toJsonbOrder = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(toJsonbOrder);
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, item]) => item !== undefined)
    .sort(([a], [b]) => compareJsonbKeys(a, b));
  return Object.fromEntries(entries.map(([key, item]) => [key, toJsonbOrder(item)]));
};

export class HookLogStore {
  readonly #rows: HookLogRow[] = [];
  readonly #maxRows: number;
  readonly #now: () => number;

  constructor(options: { maxRows?: number; now?: () => number } = {}) {
    // Logto keeps logs for days; a long benchmark must not grow without bound.
    this.#maxRows = options.maxRows ?? 50_000;
    this.#now = options.now ?? Date.now;
  }

  add(input: HookLogInput): HookLogRow {
    const key = `TriggerHook.${input.event}`;
    // Top-level order as in the capture: key, result, error, hookId, response, hookRequest.
    const payload: HookLogPayload = {
      key,
      result: input.result,
      ...(input.error === undefined ? {} : { error: input.error }),
      hookId: input.hookId,
      ...(input.response === undefined ? {} : { response: toJsonbOrder(input.response) as HookLogResponse }),
      hookRequest: { body: toJsonbOrder(input.requestBody) },
    };
    const row: HookLogRow = { id: generateId(standardIdLength), key, payload, createdAt: this.#now() };
    this.#rows.push(row);
    if (this.#rows.length > this.#maxRows) this.#rows.splice(0, this.#rows.length - this.#maxRows);
    return row;
  }

  /** Matching rows, newest first. */
  list(query: HookLogQuery): HookLogRow[] {
    const rows: HookLogRow[] = [];
    for (let index = this.#rows.length - 1; index >= 0; index -= 1) {
      const row = this.#rows[index] as HookLogRow;
      if (row.payload.hookId !== query.hookId) continue;
      if (query.logKey !== undefined && row.key !== query.logKey) continue;
      if (row.createdAt <= query.startTimeExclusive) continue;
      if (query.endTime !== undefined && row.createdAt > query.endTime) continue;
      rows.push(row);
    }
    return rows;
  }

  get size(): number {
    return this.#rows.length;
  }

  clear(): void {
    this.#rows.length = 0;
  }
}
