import 'dotenv/config';
import cluster from 'node:cluster';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { startService } from './service.js';
import { forProcessOf } from './service-processes.js';

/** The message the primary sends its service processes to stop them, as a first signal would. */
const stopMessage = 'las:stop';

const runService = async (config: Config, logger: Logger) => {
  // Handlers before the start: a signal while the service is still starting (after it logged `listening`,
  // say) must end in a clean stop, not in Node's default of dying at once.
  const starting = startService(config, { logger });
  let signals = 0;
  const stop = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      // Asked twice: stop now. Nothing is half-applied (each write is one transaction); claimed deliveries
      // are applied by whoever claims them after their lease.
      logger.warn({ signal }, 'second signal: exiting without finishing the work in hand');
      process.exit(1);
    }
    logger.info({ signal }, 'signal received');
    starting
      .then((service) => service.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A service process of `SERVICE_PROCESSES`: the primary's stop is a first signal, never a second one
  // (Ctrl-C reaches every process of the group as well as the primary, which passes it on).
  process.on('message', (message) => {
    if (message === stopMessage && signals === 0) stop('primary');
  });
  await starting;
};

/**
 * `SERVICE_PROCESSES` above 1: this process only starts that many service processes (node:cluster, each
 * a full replica listening on the one port, connections shared among them), starts another when one
 * dies, and passes signals on. One Node thread receiving, applying and answering at 1,000 deliveries/s
 * is saturated, and every delivery waits in its queue; two share the load and the cores.
 */
const runPrimary = (config: Config, logger: Logger) => {
  let stopping = false;
  let failed = false;
  const ready = new Set<number>();
  const start = () => {
    const worker = cluster.fork();
    worker.once('listening', () => ready.add(worker.id));
  };
  for (let index = 0; index < config.processes; index += 1) start();
  cluster.on('exit', (worker, code, signal) => {
    const wasReady = ready.delete(worker.id);
    if (code !== 0) failed = true;
    if (!stopping && wasReady) {
      logger.error({ pid: worker.process.pid, code, signal }, 'service process exited; starting another');
      start();
      return;
    }
    if (!stopping) {
      // It never listened (bad configuration, database unreachable at start): the others would fail alike.
      logger.error({ pid: worker.process.pid, code, signal }, 'service process failed to start; stopping');
      stopAll('start failure');
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(failed ? 1 : 0);
  });
  let signals = 0;
  function stopAll(signal: string) {
    signals += 1;
    stopping = true;
    for (const worker of Object.values(cluster.workers ?? {})) {
      if (!worker?.isConnected()) continue;
      // A second signal is a second signal to each of them too: they exit at once.
      if (signals > 1) worker.process.kill('SIGTERM');
      else worker.send(stopMessage);
    }
    logger.info({ signal }, 'stopping the service processes');
  }
  process.on('SIGTERM', () => stopAll('SIGTERM'));
  process.on('SIGINT', () => stopAll('SIGINT'));
};

const main = async () => {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`error: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  if (config.processes > 1 && cluster.isPrimary) runPrimary(config, logger);
  else await runService(cluster.isPrimary ? config : forProcessOf(config), logger);
};

main().catch((error: unknown) => {
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
