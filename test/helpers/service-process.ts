import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, renameSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { tenantEnvironment } from './tenant.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

let bundled: Promise<string> | null = null;

/**
 * `src/server.ts` bundled once per test process (esbuild, which tsx uses too; packages stay external).
 * A child started from the bundle is up in a fraction of the time `tsx` needs to compile every module,
 * which matters when a test kills and restarts the service a dozen times. The bundle lives under
 * node_modules so the service finds `db/migrations` and its packages exactly as it does from `dist/`.
 */
const serverEntry = (): Promise<string> =>
  (bundled ??= (async () => {
    const directory = `${root}node_modules/.cache/las-test`;
    mkdirSync(directory, { recursive: true });
    // Every test process builds the same bytes: each writes its own file and renames it into place.
    const outfile = `${directory}/server.mjs`;
    const building = `${directory}/server-${process.pid}.mjs`;
    await build({
      entryPoints: [`${root}src/server.ts`],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      outfile: building,
      logLevel: 'warning',
    });
    renameSync(building, outfile);
    return outfile;
  })());

export type LogLine = { level: number; msg: string; [field: string]: unknown };

export type ServiceProcess = {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Every JSON log line the process wrote so far (stdout), parsed. */
  logs: LogLine[];
  /** Everything on stderr (a crash's stack trace). */
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
  /** Sends a signal without waiting. */
  signal(signal: NodeJS.Signals): void;
  /** Resolves with the first log line (past or future) matching `predicate`. */
  waitForLog(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
};

const liveChildren = new Set<ChildProcess>();
// A test that fails half-way must not leave services running behind it.
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

/** The settings an operator would give the service for a simulated tenant and a database URL. */
export const serviceEnvironment = (
  sim: SimulatedTenant,
  databaseUrl: string,
  extra: Record<string, string> = {},
): Record<string, string> => ({
  ...tenantEnvironment(sim),
  LOGTO_RATE_LIMIT: '100000/10s',
  LOGTO_TIMEOUT_MS: '2000',
  DATABASE_URL: databaseUrl,
  PORT: '0',
  HOST: '127.0.0.1',
  LOG_LEVEL: 'info',
  // Jobs stay out of the way unless a test asks for them.
  RECONCILE_CRON: '0 3 1 1 *',
  ROLE_SWEEP_INTERVAL: '24h',
  ...extra,
});

/**
 * Starts the service as a real child process (`src/server.ts` with this environment and nothing else
 * from the test's), and resolves once it listens. A process that exits before listening rejects with
 * its stderr.
 */
export const spawnService = async (environment: Record<string, string>): Promise<ServiceProcess> => {
  const entry = await serverEntry();
  const child = spawn(process.execPath, [entry], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', ...environment },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  liveChildren.add(child);
  const logs: LogLine[] = [];
  const watchers: { predicate: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = [];
  let stderr = '';
  let pending = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const text of lines) {
      if (!text.trim()) continue;
      let line: LogLine;
      try {
        line = JSON.parse(text) as LogLine;
      } catch {
        line = { level: 30, msg: text };
      }
      logs.push(line);
      for (const watcher of [...watchers]) {
        if (watcher.predicate(line)) {
          watchers.splice(watchers.indexOf(watcher), 1);
          watcher.resolve(line);
        }
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      resolve({ code, signal });
    }),
  );

  const waitForLog = (predicate: (line: LogLine) => boolean, timeoutMs = 20_000) => {
    const found = logs.find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(() => {
        watchers.splice(watchers.indexOf(watcher), 1);
        reject(new Error(`no matching log line within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`));
      }, timeoutMs);
      const watcher = {
        predicate,
        resolve: (line: LogLine) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      watchers.push(watcher);
      void exited.then(({ code, signal }) => {
        if (!watchers.includes(watcher)) return;
        watchers.splice(watchers.indexOf(watcher), 1);
        clearTimeout(timer);
        reject(new Error(`the service exited (${code ?? signal}) before the expected log line; stderr: ${stderr.slice(-2000)}`));
      });
    });
  };

  // Generous: a loaded CI machine may take many seconds to load and migrate.
  const listening = await waitForLog((line) => line.msg === 'listening', 60_000).catch(async (error: unknown) => {
    // A child that never came up must not outlive the test that started it.
    child.kill('SIGKILL');
    await exited;
    throw error;
  });
  return {
    url: String(listening.url),
    pid: child.pid!,
    child,
    logs,
    stderr: () => stderr,
    exited,
    signal: (signal) => {
      child.kill(signal);
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    waitForLog,
  };
};
