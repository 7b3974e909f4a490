import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';

type HeapNode = { selfSize: number; children: HeapNode[] };

/**
 * Profiles of this process over the stretches a bench measures, not its setup: with `cpuDir` a CPU profile
 * (`<name>.cpuprofile`), with `heapDir` a sampling heap profile counting every allocation, those collected
 * since included (`<name>.heapprofile`: what the stretch allocated, not what it left). Without either,
 * `start` and `stop` do nothing. With `survivors`, the heap profile leaves out what a scavenge found dead:
 * it counts what the young generation's collections copied (or promoted), the work that makes their pauses.
 */
export const createProfiler = (dirs: { cpuDir?: string | undefined; heapDir?: string | undefined; survivors?: boolean }) => {
  const cpuDir = dirs.cpuDir || null;
  const heapDir = dirs.heapDir || null;
  const session = cpuDir || heapDir ? new Session() : null;
  session?.connect();
  return {
    async start(): Promise<void> {
      if (!session) return;
      if (cpuDir) {
        await session.post('Profiler.enable');
        await session.post('Profiler.start');
      }
      if (heapDir) {
        await session.post('HeapProfiler.enable');
        await session.post('HeapProfiler.startSampling', { samplingInterval: 16384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: !dirs.survivors });
      }
    },
    /** Writes the profiles of the stretch since `start` as `name`; returns the bytes it allocated (sampled), NaN without a heap profile. */
    async stop(name: string): Promise<number> {
      if (!session) return Number.NaN;
      if (cpuDir) {
        const { profile } = await session.post('Profiler.stop');
        mkdirSync(cpuDir, { recursive: true });
        writeFileSync(join(cpuDir, `${name}.cpuprofile`), JSON.stringify(profile));
      }
      if (!heapDir) return Number.NaN;
      const { profile } = await session.post('HeapProfiler.stopSampling');
      mkdirSync(heapDir, { recursive: true });
      writeFileSync(join(heapDir, `${name}.heapprofile`), JSON.stringify(profile));
      const total = (node: HeapNode): number => node.children.reduce((sum, child) => sum + total(child), node.selfSize);
      return total(profile.head as HeapNode);
    },
    close(): void {
      session?.disconnect();
    },
  };
};
