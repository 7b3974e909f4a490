import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { migrationsApplied, rows } from '../db/client.js';
import { AppError } from '../errors.js';
import { registry } from '../metrics.js';
import { defineRoute, type Route } from './route.js';

/** Where swagger-ui-dist keeps its assets: served from this process, so /docs works offline. */
export const swaggerUiDirectory = (): string => dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

/** The page's one inline script; the Content-Security-Policy of /docs allows exactly it, by its hash. */
export const docsInlineScript = `
      window.ui = SwaggerUIBundle({
        url: new URL('../openapi.json', window.location.href).toString(),
        dom_id: '#swagger-ui',
        deepLinking: true,
        persistAuthorization: false,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: 'BaseLayout',
      });
    `;

const docsPage = (): string => {
  const version = (JSON.parse(readFileSync(`${swaggerUiDirectory()}/package.json`, 'utf8')) as { version: string }).version;
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>logto-access-sync API</title>
    <link rel="stylesheet" href="./swagger-ui.css?v=${version}">
    <link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./swagger-ui-bundle.js?v=${version}"></script>
    <script src="./swagger-ui-standalone-preset.js?v=${version}"></script>
    <script>${docsInlineScript}</script>
  </body>
</html>
`;
};

const healthSchema = z.object({ status: z.literal('ok') });
const readinessSchema = z.object({
  status: z.literal('ready'),
  database: z.literal('connected'),
  synced: z
    .boolean()
    .describe('Whether a full sync has succeeded; until then /v1 reads answer 503 not_synced (deliveries are accepted all along)'),
});

export type SystemState = {
  document(): Record<string, unknown>;
  draining(): boolean;
  /** Whether the first full sync has succeeded (cached once true). */
  synced(): Promise<boolean>;
};

export const systemRoutes = (state: SystemState): Route[] => {
  let page: string | undefined;
  return [
    defineRoute({
      method: 'get',
      path: '/healthz',
      operationId: 'getHealth',
      summary: 'Liveness: the process is up',
      tags: ['operations'],
      auth: 'none',
      success: { status: 200, description: 'The process is alive', schema: healthSchema },
      handler: async () => ({ status: 'ok' as const }),
    }),
    defineRoute({
      method: 'get',
      path: '/readyz',
      operationId: 'getReadiness',
      summary: 'Readiness: the database answers and every migration is applied (and whether the first full sync is done)',
      tags: ['operations'],
      auth: 'none',
      success: { status: 200, description: 'Ready to serve', schema: readinessSchema },
      errors: [503],
      handler: async ({ deps }) => {
        if (state.draining()) throw new AppError(503, 'shutting_down', 'The process is shutting down');
        try {
          await rows(deps.db, sql`select 1`);
        } catch {
          throw new AppError(503, 'database_unreachable', 'The database does not answer');
        }
        if (!(await migrationsApplied(deps.db))) {
          throw new AppError(503, 'migrations_pending', 'The database migrations are not all applied');
        }
        // Ready even before the first sync: the webhook deliveries made during the baseline must be accepted.
        return { status: 'ready' as const, database: 'connected' as const, synced: await state.synced() };
      },
    }),
    defineRoute({
      method: 'get',
      path: '/metrics',
      operationId: 'getMetrics',
      summary: 'Prometheus metrics',
      tags: ['operations'],
      auth: 'none',
      success: { status: 200, description: 'Metrics in the Prometheus text format', contentType: 'text/plain' },
      handler: async ({ res }) => {
        res.type(registry.contentType).send(await registry.metrics());
      },
    }),
    defineRoute({
      method: 'get',
      path: '/openapi.json',
      operationId: 'getOpenApiDocument',
      summary: 'This OpenAPI 3.1 document',
      tags: ['operations'],
      auth: 'none',
      success: { status: 200, description: 'The OpenAPI document', contentType: 'application/json' },
      handler: async ({ res }) => {
        res.json(state.document());
      },
    }),
    defineRoute({
      method: 'get',
      path: '/docs',
      operationId: 'getApiReference',
      summary: 'Interactive API reference (Swagger UI, served locally)',
      tags: ['operations'],
      auth: 'none',
      success: { status: 200, description: 'The reference page', contentType: 'text/html' },
      handler: async ({ req, res }) => {
        const [path] = req.originalUrl.split('?');
        // Relative asset links need the trailing slash: /docs → /docs/ (works behind a path prefix too).
        // The query is dropped: the page reads none, and echoing it let a request grow a response header
        // to its own size (16 KiB), more than many proxies and clients accept.
        if (!path?.endsWith('/')) {
          res.redirect(301, 'docs/');
          return;
        }
        page ??= docsPage();
        res.type('html').send(page);
      },
    }),
  ];
};
