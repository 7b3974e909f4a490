import { readFileSync } from 'node:fs';
import { cpuSeconds, cpuSpent, postgresPids } from './process-cpu.js';

/**
 * PostgreSQL's CPU in each second of `bench/intake.ts`'s loaded window, from a process of its own: a scan
 * of /proc for every process is milliseconds of synchronous work, which in the service's process would add
 * to the event-loop delay it is printed beside. Argument: a JSON file `{ from, seconds }` (epoch ms, whole
 * seconds). Prints one JSON line: the cores all `postgres` processes used in each second.
 */
type Plan = { from: number; seconds: number };

const plan = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Plan;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const main = async () => {
  await sleep(plan.from - Date.now());
  let before = cpuSeconds(postgresPids());
  let since = performance.now();
  const cores: number[] = [];
  for (let second = 1; second <= plan.seconds; second += 1) {
    await sleep(plan.from + second * 1000 - Date.now());
    const after = cpuSeconds(postgresPids());
    // A backend started within the second counts from zero: all its CPU is this second's.
    cores.push((cpuSpent(before, after) * 1000) / (performance.now() - since));
    before = after;
    since = performance.now();
  }
  process.stdout.write(`${JSON.stringify({ cores })}\n`);
};

main().then(() => process.exit(0)).catch((error) => {
  console.error(error);
  process.exit(1);
});
