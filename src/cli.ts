#!/usr/bin/env node
import 'dotenv/config';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, loadDatabaseConfig } from './config.js';
import { openDatabase, runMigrations, type DatabaseHandle } from './db/client.js';
import { createApiKey, listApiKeys, revokeApiKey } from './db/api-keys.js';
import { AppError } from './errors.js';
import { openBaselineDatabase, startFullSync } from './jobs/full-sync-runner.js';
import { createLogger } from './logger.js';
import { createLogtoClient, LogtoError } from './logto/index.js';
import { createProgressReporter } from './progress.js';
import type { FullSyncKind } from './sync/full-sync.js';

const usage = `Usage: logto-access-sync <command>   (or: npm run cli -- <command>)

Commands:
  migrate                                   apply the database migrations
  sync                                      full sync of the Logto tenant into the database
  reconcile                                 compare Logto with the database, repair drift, print the report
  keys create --name NAME --scope read|write   create an API key (the secret is printed once)
  keys list                                 list API keys
  keys revoke <id|name>                     revoke an API key`;

const withDatabase = async <T>(fn: (database: DatabaseHandle) => Promise<T>): Promise<T> => {
  const database = await openDatabase(loadDatabaseConfig());
  try {
    await runMigrations(database);
    return await fn(database);
  } finally {
    await database.close();
  }
};

const fullSync = async (kind: FullSyncKind) => {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const database = await (kind === 'baseline' ? openBaselineDatabase(config.database) : openDatabase(config.database));
  const progress = createProgressReporter(logger);
  try {
    await runMigrations(database);
    const deps = { database, logto: createLogtoClient(config.logto, { logger }), logger };
    const started = await startFullSync(deps, { kind, trigger: 'cli', onProgress: (update) => progress.update(update) });
    const { run, counts, organizationsAvailable } = await started.done;
    progress.stop();
    const report = (run.report as { drift?: { totals: Record<string, number>; items: unknown[]; truncated: number } } | null)?.drift;
    console.log(
      `${kind} #${run.id} succeeded in ${(counts.durationMs / 1000).toFixed(1)} s: ${counts.users} users, ` +
        `${counts.organizations} organizations, ${counts.organizationRoles} organization roles, ${counts.memberships} memberships, ` +
        `${counts.memberRoles} member roles; ${counts.rowsWritten} rows written, ${counts.requests} requests to Logto`,
    );
    if (!organizationsAvailable) console.log(run.notes);
    if (kind === 'reconcile' && report) {
      console.log(`drift: ${JSON.stringify(report.totals)}`);
      for (const item of report.items.slice(0, 50)) console.log(`  ${JSON.stringify(item)}`);
      if (report.items.length > 50 || report.truncated > 0) console.log(`  … see GET /v1/sync/runs/${run.id} for the rest`);
    }
  } finally {
    progress.stop();
    await database.close();
  }
};

const keys = async (args: string[]) => {
  const { values, positionals } = parseArgs({
    args,
    options: { name: { type: 'string' }, scope: { type: 'string' } },
    allowPositionals: true,
  });
  const [action, target] = positionals;
  await withDatabase(async ({ db }) => {
    if (action === 'create') {
      if (!values.name) throw new CliError('keys create needs --name NAME');
      if (values.scope !== 'read' && values.scope !== 'write') throw new CliError('keys create needs --scope read|write');
      const key = await createApiKey(db, { name: values.name, scope: values.scope });
      console.log(`Created API key ${key.name} (${key.scope}). Store it now; it is not shown again:\n${key.secret}`);
    } else if (action === 'list') {
      const all = await listApiKeys(db);
      if (all.length === 0) console.log('No API keys.');
      for (const key of all) {
        console.log(
          `${key.id}\t${key.name}\t${key.scope}\t${key.prefix}…\tcreated ${key.createdAt.toISOString()}` +
            (key.revokedAt ? `\trevoked ${key.revokedAt.toISOString()}` : ''),
        );
      }
    } else if (action === 'revoke') {
      if (!target) throw new CliError('keys revoke needs an id or a name');
      if (!(await revokeApiKey(db, target))) throw new CliError(`no active API key ${target}`);
      console.log(`Revoked API key ${target}.`);
    } else {
      throw new CliError(usage);
    }
  });
};

class CliError extends Error {}

const main = async (argv: string[]) => {
  const [command, ...rest] = argv;
  switch (command) {
    case 'migrate':
      await withDatabase(async (database) => {
        console.log(`Migrations applied (${database.driver === 'postgres' ? 'PostgreSQL' : 'embedded PGlite'}).`);
      });
      return;
    case 'sync':
      return fullSync('baseline');
    case 'reconcile':
      return fullSync('reconcile');
    case 'keys':
      return keys(rest);
    default:
      throw new CliError(usage);
  }
};

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (error: unknown) => {
    // One line for the operator; the messages below are written to be safe to show (no secrets).
    if (error instanceof ConfigError || error instanceof LogtoError || error instanceof AppError || error instanceof CliError) {
      console.error(error instanceof CliError ? error.message : `error: ${error.message}`);
    } else {
      console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    }
    process.exit(1);
  },
);
