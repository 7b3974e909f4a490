/**
 * Runs `tick` every `intervalMs` as a chain of unref'd timers: a slow run delays the next instead of
 * overlapping it, and the process can exit while waiting. `track` records a run (scheduled or started by
 * hand) so that `stop` waits for it.
 */
export const repeatEvery = (options: { intervalMs: number; initialDelayMs: number; tick: () => Promise<void> }) => {
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let current: Promise<unknown> | null = null;
  const schedule = (delayMs: number) => {
    timer = setTimeout(() => void loop(), delayMs);
    timer.unref();
  };
  const loop = async () => {
    timer = null;
    if (stopped) return;
    await options.tick();
    if (!stopped) schedule(options.intervalMs);
  };
  schedule(options.initialDelayMs);
  return {
    track<T>(run: Promise<T>): Promise<T> {
      const settled: Promise<unknown> = run
        .catch(() => null)
        .finally(() => {
          if (current === settled) current = null;
        });
      current = settled;
      return run;
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await current;
    },
  };
};
