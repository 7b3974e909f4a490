import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { sql } from 'drizzle-orm';
import { rows } from '../src/db/client.js';
import { claimOutbox, deliveredAttempt, settleAttempts } from '../src/db/outbox.js';
import { recordChanges } from '../src/sync/apply/changes.js';
import { createEventSubscription } from '../src/sync/event-subscriptions.js';
import { freshPostgres } from './fresh-database.js';
import { cpuSeconds, cpuSpent, postgresPids } from './process-cpu.js';

/**
 * `npm run bench -- outbox-writes`: what the outbox costs PostgreSQL per delivery, without HTTP. `--changes`
 * changes (batches of 20, as the apply functions write them) fanned out to `--subscriptions` subscriptions,
 * then every row claimed (256 at a time) and settled as delivered, through the project's own functions.
 * Reports WAL bytes per delivery for each phase, which do not depend on how busy the machine is (the
 * events bench's CPU figures move ±30 % between runs of the same code), beside the CPU PostgreSQL and this
 * process spent, and the outbox's size after.
 *
 *   --changes 4000 --subscriptions 5 --label run
 */
export const run = async (args: string[]) => {
  const values = parseArgs({
    args,
    options: {
      changes: { type: 'string', default: '4000' },
      subscriptions: { type: 'string', default: '5' },
      label: { type: 'string', default: 'run' },
    },
  }).values;
  const changes = Number(values.changes);
  const subscriptions = Number(values.subscriptions);
  const handle = await freshPostgres('las_bench_outbox_writes');
  try {
    const { db } = handle;
    for (let index = 0; index < subscriptions; index += 1) {
      await createEventSubscription(db, { url: `http://127.0.0.1:9/hook${index}` }, { allowPrivateUrls: true });
    }
    const walPosition = async () =>
      Number((await rows<{ at: string }>(db, sql`select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::text as at`))[0]!.at);
    const measure = async (phase: () => Promise<void>) => {
      const pids = postgresPids();
      const [wal, cpu, own, started] = [await walPosition(), cpuSeconds(pids), process.cpuUsage(), performance.now()];
      await phase();
      const ownUsed = process.cpuUsage(own);
      return {
        walBytes: (await walPosition()) - wal,
        postgresCpuSeconds: cpuSpent(cpu, cpuSeconds(pids)),
        ownCpuSeconds: (ownUsed.user + ownUsed.system) / 1e6,
        seconds: (performance.now() - started) / 1000,
      };
    };

    const queued = await measure(async () => {
      for (let from = 0; from < changes; from += 20) {
        const batch = Array.from({ length: Math.min(20, changes - from) }, (_, index) => ({
          kind: 'user.updated' as const,
          userId: `bench_user_${(from + index) % 1000}`,
        }));
        await recordChanges(db, batch, { source: 'webhook', observedAt: new Date() });
      }
    });
    let delivered = 0;
    // The claims and the settlements are also timed apart (PostgreSQL's CPU read around each statement:
    // /proc counts in ticks of 10 ms, so each part's sum is an estimate, good over a few dozen statements).
    const parts = { claim: { postgres: 0, own: 0, wal: 0 }, settle: { postgres: 0, own: 0, wal: 0 } };
    const timed = async <T>(part: keyof typeof parts, pids: number[], statement: () => Promise<T>): Promise<T> => {
      const [wal, cpu, own] = [await walPosition(), cpuSeconds(pids), process.cpuUsage()];
      const result = await statement();
      const ownUsed = process.cpuUsage(own);
      parts[part].postgres += cpuSpent(cpu, cpuSeconds(pids));
      parts[part].own += (ownUsed.user + ownUsed.system) / 1e6;
      parts[part].wal += (await walPosition()) - wal;
      return result;
    };
    const sent = await measure(async () => {
      const pids = postgresPids();
      for (;;) {
        const claimed = await timed('claim', pids, () => claimOutbox(db, 256, 60_000, Number.MAX_SAFE_INTEGER));
        if (claimed.length === 0) return;
        await timed('settle', pids, () => settleAttempts(db, claimed.map((row) => deliveredAttempt(row, 204))));
        delivered += claimed.length;
      }
    });
    const [size] = await rows<{ heap: string; indexes: string }>(
      db,
      sql`select pg_relation_size('event_outbox')::text as heap, pg_indexes_size('event_outbox')::text as indexes`,
    );
    const perDelivery = (value: number, scale: number, digits: number) => ((value * scale) / Math.max(1, delivered)).toFixed(digits);
    const printed: [string, string][] = [
      ['deliveries (changes × subscriptions)', `${delivered} (${changes} × ${subscriptions})`],
      ['WAL bytes per delivery: queued (with the change) / claimed and settled', `${perDelivery(queued.walBytes, 1, 0)} / ${perDelivery(sent.walBytes, 1, 0)}`],
      [
        'PostgreSQL CPU µs per delivery: queued / claimed and settled',
        `${perDelivery(queued.postgresCpuSeconds, 1e6, 1)} / ${perDelivery(sent.postgresCpuSeconds, 1e6, 1)}`,
      ],
      [
        'PostgreSQL CPU µs per delivery: claims / settlements',
        `${perDelivery(parts.claim.postgres, 1e6, 1)} / ${perDelivery(parts.settle.postgres, 1e6, 1)}`,
      ],
      ['WAL bytes per delivery: claims / settlements', `${perDelivery(parts.claim.wal, 1, 0)} / ${perDelivery(parts.settle.wal, 1, 0)}`],
      ['this process CPU µs per delivery: claims / settlements', `${perDelivery(parts.claim.own, 1e6, 1)} / ${perDelivery(parts.settle.own, 1e6, 1)}`],
      ['this process CPU µs per delivery: queued / claimed and settled', `${perDelivery(queued.ownCpuSeconds, 1e6, 1)} / ${perDelivery(sent.ownCpuSeconds, 1e6, 1)}`],
      ['wall s: queued / claimed and settled', `${queued.seconds.toFixed(2)} / ${sent.seconds.toFixed(2)}`],
      ['outbox table / indexes after, KiB', `${Math.round(Number(size!.heap) / 1024)} / ${Math.round(Number(size!.indexes) / 1024)}`],
    ];
    console.log(`\n## Outbox writes (${values.label})`);
    for (const [name, value] of printed) console.log(`${name.padEnd(72)} ${value}`);
    console.log('\n(PostgreSQL CPU counts every postgres process of the machine: run it under the exclusive lock)');
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    mkdirSync('bench/results', { recursive: true });
    const base = `bench/results/outbox-writes-${values.label}-${stamp}`;
    writeFileSync(`${base}.json`, JSON.stringify({ label: values.label, options: values, results: Object.fromEntries(printed) }, null, 2));
    const markdown = [`# outbox writes (${values.label})`, '', `\`npm run bench -- outbox-writes ${args.join(' ')}\``, '', '| figure | value |', '| --- | --- |'];
    for (const [name, value] of printed) markdown.push(`| ${name} | ${value} |`);
    writeFileSync(`${base}.md`, `${markdown.join('\n')}\n`);
    console.log(`\nresults: ${base}.json, ${base}.md`);
  } finally {
    await handle.drop();
  }
};
