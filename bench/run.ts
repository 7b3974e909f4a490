/**
 * `npm run bench -- <scenario> [flags]`: one scenario per file beside this one, each exporting
 * `run(args)`. Without a scenario, `overview` runs (sync, webhooks and API figures in one go).
 *
 *   npm run bench -- sync --scale 0.1          full sync and reconcile against the pure crawl (bench/sync.ts)
 *   npm run bench -- hot-paths --scale 0.1     reads and webhook intake against bare references (bench/hot-paths.ts)
 *   npm run bench -- intake --scale 0.1        the inbox worker's drain and reads under the budget (bench/intake.ts)
 *   npm run bench -- events                    change → subscriber and SSE latency, fan-out (bench/events.ts)
 *   npm run bench -- outbox-writes             WAL and PostgreSQL CPU per delivery, no HTTP (bench/outbox-writes.ts)
 *   npm run bench -- baseline-probe            one baseline's PostgreSQL CPU, WAL and table sizes (bench/baseline-probe.ts)
 */
import { spawnSync } from 'node:child_process';
import { serviceNodeFlags } from './service-flags.js';

type Scenario = { run(args: string[]): Promise<void> };

const scenarios: Record<string, () => Promise<Scenario>> = {
  overview: () => import('./overview.js'),
  sync: () => import('./sync.js'),
  'hot-paths': async () => ({ run: (await import('./hot-paths.js')).runHotPaths }),
  intake: () => import('./intake.js'),
  events: () => import('./events.js'),
  'outbox-writes': () => import('./outbox-writes.js'),
  'baseline-probe': () => import('./baseline-probe.js'),
  'sync-timeline': () => import('./sync-timeline.js'),
};

const [first, ...rest] = process.argv.slice(2);
const named = first !== undefined && !first.startsWith('-');
const name = named ? first : 'overview';
const args = named ? rest : process.argv.slice(2);
const load = scenarios[name];
if (!load) {
  console.error(`unknown bench scenario "${name}"; one of: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
/** Scenarios that run the service in this process (the others run syncs here, or the built service in a child). */
const servingHere = new Set(['overview', 'intake', 'events']);
// Node flags are fixed when a process starts: a scenario serving here runs in a process started with the
// service's flags (`serviceNodeFlags`), so that its figures are those of the service as deployed.
const missingFlags = servingHere.has(name) ? serviceNodeFlags().filter((flag) => !process.execArgv.includes(flag)) : [];
if (missingFlags.length > 0) {
  const child = spawnSync(process.execPath, [...process.execArgv, ...missingFlags, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(child.status ?? 1);
}
load()
  .then((scenario) => scenario.run(args))
  .then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(`bench failed: ${error instanceof Error ? error.stack : String(error)}`);
      process.exit(1);
    },
  );
