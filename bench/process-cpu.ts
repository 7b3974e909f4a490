import { readdirSync, readFileSync } from 'node:fs';

/** User + system CPU seconds each process used so far (Linux /proc; a process that is gone is left out). */
export const cpuSeconds = (pids: number[]): Map<number, number> => {
  const used = new Map<number, number>();
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      used.set(pid, (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      // exited
    }
  }
  return used;
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
export const trackPostgresCpu = (everyMs = 500): { stop(): Map<number, number> } => {
  const start = cpuSeconds(postgresPids());
  const last = new Map(start);
  const read = () => {
    for (const [pid, seconds] of cpuSeconds(postgresPids())) last.set(pid, seconds);
  };
  const timer = setInterval(read, everyMs);
  return {
    stop() {
      clearInterval(timer);
      read();
      return new Map([...last].map(([pid, seconds]) => [pid, seconds - (start.get(pid) ?? 0)]));
    },
  };
};

export const totalSeconds = (byPid: Map<number, number>): number => [...byPid.values()].reduce((sum, seconds) => sum + seconds, 0);
