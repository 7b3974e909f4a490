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
