import type { Config } from './config.js';

/**
 * The configuration of one of `processes` service processes on a host: Logto's request budget and
 * concurrency are the host's, so each process gets its share (the budget is counted per process).
 */
export const forProcessOf = (config: Config): Config => {
  const share = (value: number) => Math.max(1, Math.floor(value / config.processes));
  return {
    ...config,
    logto: {
      ...config.logto,
      rateLimit: { ...config.logto.rateLimit, requests: share(config.logto.rateLimit.requests) },
      concurrency: share(config.logto.concurrency),
    },
  };
};
