import { readdirSync, readFileSync } from 'node:fs';

/** User + system CPU seconds in a Linux `stat` file (a process's or a thread's), or null once it is gone. */
const statCpuSeconds = (path: string): number | null => {
  try {
    const fields = readFileSync(path, 'utf8').replace(/^.*\) /, '').split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
};

/** User + system CPU seconds each process used so far (Linux /proc; a process that is gone is left out). */
export const cpuSeconds = (pids: number[]): Map<number, number> => {
  const used = new Map<number, number>();
  for (const pid of pids) {
    const seconds = statCpuSeconds(`/proc/${pid}/stat`);
    if (seconds !== null) used.set(pid, seconds);
  }
  return used;
};

/**
 * CPU seconds of this process's main thread and of its other threads (V8's optimising compiler and parallel
 * garbage collector, libuv's pool), from /proc/self/task: the second part grows with what the main thread
 * allocates and compiles, and was 0.9-1.8 of a scale-0.3 baseline's 4.7-6.1 CPU-s.
 */
export const threadSeconds = (): { main: number; helpers: number } => {
  let main = 0;
  let helpers = 0;
  for (const task of readdirSync('/proc/self/task')) {
    const seconds = statCpuSeconds(`/proc/self/task/${task}/stat`) ?? 0;
    if (task === String(process.pid)) main += seconds;
    else helpers += seconds;
  }
  return { main, helpers };
};

/**
 * Seconds the machine's cores have spent idle so far, all together (Linux /proc/stat: idle and iowait):
 * beside a process's own CPU, whether it was short of cores or had them and waited.
 */
export const machineIdleSeconds = (): number => {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/);
  return (Number(fields[4]) + Number(fields[5])) / 100;
};

/** CPU seconds used between two readings by the processes alive at the second (a backend that exited in between is not counted). */
export const cpuSpent = (before: Map<number, number>, after: Map<number, number>): number =>
  [...after].reduce((sum, [pid, seconds]) => sum + seconds - (before.get(pid) ?? 0), 0);

export const postgresPids = (): number[] =>
  readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((entry) => {
      try {
        return readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'postgres';
      } catch {
        return false;
      }
    })
    .map(Number);

/**
 * CPU seconds of every `postgres` process from now until `stop()`, including backends that exit in
 * between: a pool closes connections idle for 10 s, and a reading taken only at the end missed what they
 * had done (a scale-1 baseline's PostgreSQL CPU read 42.9 s where sampling every backend gave ~70 s).
 * Read every `everyMs`; a backend that exits between two readings loses at most that much of its work.
 * `stop` gives the seconds each process used, by pid.
 */
export const trackPostgresCpu = (everyMs = 500): { stop(): Map<number, number>; databaseOf(pid: number): string | undefined } => {
  const databases = new Map<number, string>();
  const pids = () => {
    const found = postgresPids();
    for (const pid of found) if (!databases.has(pid)) databases.set(pid, backendDatabase(pid) ?? '');
    return found;
  };
  const start = cpuSeconds(pids());
  const last = new Map(start);
  const read = () => {
    for (const [pid, seconds] of cpuSeconds(pids())) last.set(pid, seconds);
  };
  const timer = setInterval(read, everyMs);
  return {
    stop() {
      clearInterval(timer);
      read();
      return new Map([...last].map(([pid, seconds]) => [pid, seconds - (start.get(pid) ?? 0)]));
    },
    databaseOf: (pid) => databases.get(pid) || undefined,
  };
};

/**
 * The database a backend serves, from the title PostgreSQL gives it (`postgres: [<cluster>: ]<user> <database> <host>(<port>) <state>`);
 * undefined for the server's own processes (checkpointer, walwriter, …), which serve none.
 */
const backendDatabase = (pid: number): string | undefined => {
  try {
    const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    return /^postgres: (?:\S+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\]) /.exec(title)?.[1];
  } catch {
    return undefined;
  }
};

/** Of `byPid` (from `stop`), the seconds of the backends serving `database`: a run's own, apart from the server's other processes and other databases' clients. */
export const secondsOf = (tracker: { databaseOf(pid: number): string | undefined }, byPid: Map<number, number>, database: string): number =>
  [...byPid].reduce((sum, [pid, seconds]) => (tracker.databaseOf(pid) === database ? sum + seconds : sum), 0);

export const totalSeconds = (byPid: Map<number, number>): number => [...byPid.values()].reduce((sum, seconds) => sum + seconds, 0);
