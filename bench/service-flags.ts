import { readFileSync } from 'node:fs';

/** The `--flags` between `node` and the entry point of a command line (`node --a=1 --b dist/x.js` → `--a=1 --b`). */
export const nodeFlagsOf = (commandLine: string): string[] => {
  const [command, ...words] = commandLine.trim().split(/\s+/);
  if (command !== 'node') return [];
  const flags: string[] = [];
  for (const word of words) {
    if (!word.startsWith('--')) break;
    flags.push(word);
  }
  return flags;
};

/**
 * The node flags the service runs with, read from `npm start` (the Dockerfile's CMD holds the same ones, which
 * test/package.test.ts checks): a bench that runs the service, in its own process or in a child, passes exactly
 * these, so it measures the service as deployed, and one that runs a sync passes none, as `npm run sync` does.
 */
export const serviceNodeFlags = (): string[] =>
  process.env.BENCH_SERVICE_FLAGS !== undefined ? candidateFlags(process.env.BENCH_SERVICE_FLAGS) : deployedFlags();

const deployedFlags = (): string[] =>
  nodeFlagsOf((JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } }).scripts.start);

/**
 * `BENCH_SERVICE_FLAGS="--max-semi-space-size=32 …"` (empty: none): flags to try instead of `npm start`'s, so
 * that candidates can be alternated run by run without editing package.json between them. Said on stderr, so
 * that no run's figures are taken for the deployed service's by mistake.
 */
const candidateFlags = (text: string): string[] => {
  const flags = text.split(/\s+/).filter(Boolean);
  if (flags.some((flag) => !flag.startsWith('--'))) throw new Error(`BENCH_SERVICE_FLAGS holds a word that is not a --flag: "${text}"`);
  console.error(`service node flags from BENCH_SERVICE_FLAGS, not npm start: ${flags.join(' ') || '(none)'}`);
  return flags;
};
