import cron, { type ScheduledTask } from 'node-cron';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';

export type ReconcileSchedule = { stop(): Promise<void>; nextRunAt(): Date | null };

/**
 * Runs `start` on the cron expression in the given time zone. A tick that finds a run in progress
 * (here or on another replica) is skipped and logged; a failing run does not stop the schedule.
 */
export const scheduleReconcile = (
  options: { cron: string; timezone: string; logger: Logger },
  start: () => Promise<unknown>,
): ReconcileSchedule => {
  const task: ScheduledTask = cron.schedule(
    options.cron,
    async () => {
      try {
        await start();
      } catch (error) {
        if (error instanceof AppError && error.status === 409) {
          options.logger.info({ details: error.details }, 'scheduled reconcile skipped: one is already running');
        } else {
          options.logger.error({ err: error }, 'scheduled reconcile failed');
        }
      }
    },
    { timezone: options.timezone, name: 'nightly-reconcile', noOverlap: true },
  );
  return {
    stop: async () => {
      await task.destroy();
    },
    nextRunAt: () => task.getNextRun(),
  };
};
