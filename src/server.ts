import 'dotenv/config';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { startService } from './service.js';

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
  await starting;
};

main().catch((error: unknown) => {
  console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
