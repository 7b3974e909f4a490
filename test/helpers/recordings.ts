import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The recordings from a real Logto (test/fixtures/logto, read-only). */
export const recordingsDir = fileURLToPath(new URL('../fixtures/logto/', import.meta.url));

/** The body of a recorded Management API response. */
export const recorded = <T>(file: string): T =>
  (JSON.parse(readFileSync(`${recordingsDir}management-api/${file}`, 'utf8')) as { body: T }).body;

export type RecordedDelivery = {
  seq: number;
  headers: Record<string, string>;
  rawBody: string;
};

export const recordedSigningKey = 'tSllWIAWxatwm6LXx6CxWBMA0bYn6pU8';

export const recordedDeliveries = (): RecordedDelivery[] =>
  readdirSync(`${recordingsDir}deliveries`)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => JSON.parse(readFileSync(`${recordingsDir}deliveries/${file}`, 'utf8')) as RecordedDelivery);
