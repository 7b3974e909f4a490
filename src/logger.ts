import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Paths pino blanks wherever they appear, so a secret that reaches a log call still never reaches the output. */
const redact = [
  'clientSecret',
  '*.clientSecret',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers["logto-signature-sha-256"]',
  'req.headers["svix-signature"]',
  'req.headers["webhook-signature"]',
  'access_token',
  '*.access_token',
];

/** The service's logger; `destination` (default stdout) lets a test read every line the service writes. */
export const createLogger = (level: string = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger => {
  const options = { level, redact: { paths: redact, censor: '[redacted]' }, base: { service: 'logto-access-sync' } };
  return destination ? pino(options, destination) : pino(options);
};

/** A logger that discards everything: the default for library code and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
