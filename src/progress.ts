import { SingleBar, Presets } from 'cli-progress';
import type { Logger } from './logger.js';
import type { SyncProgress } from './sync/full-sync.js';

/**
 * Shows a sync's progress: a bar with counts and rate on a terminal, a log line every few seconds
 * elsewhere (containers, CI), where a redrawn bar would only be noise.
 */
export const createProgressReporter = (logger: Logger, interactive = Boolean(process.stderr.isTTY)) => {
  let phase: SyncProgress['phase'] | null = null;
  let bar: SingleBar | null = null;
  let phaseStarted = Date.now();
  let lastLog = 0;
  const stopBar = () => {
    bar?.stop();
    bar = null;
  };
  return {
    update(progress: SyncProgress) {
      if (progress.phase !== phase) {
        stopBar();
        phase = progress.phase;
        phaseStarted = Date.now();
        if (interactive) {
          bar = new SingleBar(
            { format: `${progress.phase.padEnd(18)} {bar} {value}/{total} | {rate}/s | {duration_formatted}`, hideCursor: true, stream: process.stderr },
            Presets.shades_classic,
          );
          bar.start(progress.total ?? progress.done, progress.done, { rate: '0' });
        }
      }
      const seconds = Math.max((Date.now() - phaseStarted) / 1000, 0.001);
      const rate = (progress.done / seconds).toFixed(0);
      if (bar) {
        bar.setTotal(Math.max(progress.total ?? progress.done, progress.done));
        bar.update(progress.done, { rate });
      } else if (Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        logger.info({ phase: progress.phase, done: progress.done, total: progress.total, perSecond: Number(rate) }, 'sync progress');
      }
    },
    stop: stopBar,
  };
};
