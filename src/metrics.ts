import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * One registry for the process; every layer records into it and `/metrics` serves it.
 * Metric objects are created once here so names and labels cannot drift between callers.
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry });

export const metrics = {
  httpRequestDuration: new Histogram({
    name: 'http_request_duration_seconds',
    help: 'REST API latency by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  }),
  webhookDeliveries: new Counter({
    name: 'webhook_deliveries_total',
    help: 'Webhook deliveries received, by outcome (accepted, duplicate, unauthorized, invalid, too_large, unavailable)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  }),
  webhookProcessed: new Counter({
    name: 'webhook_processed_total',
    help: 'Inbox deliveries processed, by event and outcome (applied, ignored, retry, dead)',
    labelNames: ['event', 'outcome'] as const,
    registers: [registry],
  }),
  inboxDepth: new Gauge({
    name: 'webhook_inbox_depth',
    help: 'Deliveries waiting in the inbox',
    registers: [registry],
  }),
  syncDuration: new Histogram({
    name: 'sync_run_duration_seconds',
    help: 'Duration of full syncs, reconciles and role sweeps',
    labelNames: ['kind', 'status'] as const,
    buckets: [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 1800],
    registers: [registry],
  }),
  driftFound: new Counter({
    name: 'reconcile_drift_total',
    help: 'Drift found by reconciliation, by kind',
    labelNames: ['kind'] as const,
    registers: [registry],
  }),
  accessChanges: new Counter({
    name: 'access_changes_total',
    help: 'Changes applied to the access state, by source and kind',
    labelNames: ['source', 'kind'] as const,
    registers: [registry],
  }),
  logtoRequests: new Counter({
    name: 'logto_requests_total',
    help: 'Requests made to the Logto Management API, by method and status (or error)',
    labelNames: ['method', 'status'] as const,
    registers: [registry],
  }),
  logtoRetries: new Counter({
    name: 'logto_retries_total',
    help: 'Retried Logto requests, by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  }),
  logtoRequestDuration: new Histogram({
    name: 'logto_request_duration_seconds',
    help: 'Latency of Logto Management API requests',
    labelNames: ['method'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  }),
  eventDeliveries: new Counter({
    name: 'event_deliveries_total',
    help: 'Access event delivery attempts, by outcome (delivered, retry, failed)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  }),
  eventSendDuration: new Histogram({
    name: 'event_send_duration_seconds',
    help: 'Time from sending an access event to its answer (or failure)',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
    registers: [registry],
  }),
  eventBacklog: new Gauge({
    name: 'event_outbox_backlog',
    help: 'Access events not yet delivered, per subscription',
    labelNames: ['subscription'] as const,
    registers: [registry],
  }),
  eventStreams: new Gauge({
    name: 'event_streams_open',
    help: 'Live change streams (SSE) open on this process',
    registers: [registry],
  }),
};
