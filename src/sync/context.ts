import type { DatabaseHandle } from '../db/client.js';
import type { Logger } from '../logger.js';
import type { LogtoClient } from '../logto/index.js';

/** What every sync operation needs: the database, the one Logto client (and its request budget), a logger. */
export type SyncDeps = { database: DatabaseHandle; logto: LogtoClient; logger: Logger };
