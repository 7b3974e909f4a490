import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { SimulatedTenant } from '../../src/simulator/index.js';
import { recordingsDir } from '../helpers/recordings.js';

export interface CapturedDelivery {
  seq: number;
  headers: Record<string, string>;
  rawBody: string;
  respondedStatus: number;
}

export interface CapturedAction {
  action: string;
  method: string;
  path: string;
  requestBody?: unknown;
  status: string;
  webhookSeqFrom: number;
  webhookSeqTo: number;
  response: unknown;
}

export interface CapturedApiResponse {
  request: { method: string; path: string };
  status: number;
  headers: Array<[string, string]>;
  body: unknown;
}

export const loadDeliveries = (): Map<number, CapturedDelivery> => {
  const directory = `${recordingsDir}deliveries`;
  const deliveries = new Map<number, CapturedDelivery>();
  for (const file of readdirSync(directory).filter((name) => name.endsWith('.json'))) {
    const delivery = JSON.parse(readFileSync(`${directory}/${file}`, 'utf8')) as CapturedDelivery;
    deliveries.set(delivery.seq, delivery);
  }
  return deliveries;
};

export const loadActions = (): CapturedAction[] =>
  readFileSync(`${recordingsDir}actions-timeline.jsonl`, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as CapturedAction);

export const loadApiCapture = (name: string): CapturedApiResponse =>
  JSON.parse(readFileSync(`${recordingsDir}management-api/${name}.json`, 'utf8')) as CapturedApiResponse;

export const capturedHeaders = (capture: CapturedApiResponse, name: string): string[] =>
  capture.headers.filter(([key]) => key.toLowerCase() === name.toLowerCase()).map(([, value]) => value);

export interface ReceivedDelivery {
  headers: IncomingHttpHeaders;
  rawBody: Buffer;
  body: Record<string, unknown>;
}

export interface Receiver {
  url: string;
  received: ReceivedDelivery[];
  /** What to answer: a status, or 'hang' to never answer. Default 200. */
  respondWith: (delivery: ReceivedDelivery) => number | 'hang';
  close(): Promise<void>;
}

/** A local webhook endpoint that keeps the raw bytes of everything it receives. */
export const startReceiver = async (): Promise<Receiver> => {
  const app = express();
  const receiver: Receiver = {
    url: '',
    received: [],
    respondWith: () => 200,
    close: async () => {},
  };
  app.post('/hook', express.raw({ type: () => true }), (request, response) => {
    const rawBody = request.body as Buffer;
    const delivery: ReceivedDelivery = {
      headers: request.headers,
      rawBody,
      body: JSON.parse(rawBody.toString('utf8')) as Record<string, unknown>,
    };
    receiver.received.push(delivery);
    const answer = receiver.respondWith(delivery);
    if (answer === 'hang') return;
    response.status(answer).json({ ok: answer < 300, seq: receiver.received.length });
  });
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return receiver;
};

/** A token from the simulated token endpoint, the way a client gets one. */
export const fetchToken = async (
  sim: SimulatedTenant,
  form: Record<string, string> = {},
  /** `null` sends no Authorization header (credentials in the form instead). */
  authorization: string | null = `Basic ${Buffer.from(`${sim.clientId}:${sim.clientSecret}`).toString('base64')}`,
): Promise<Response> =>
  fetch(sim.tokenUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      ...(authorization === null ? {} : { authorization }),
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: sim.resource, scope: 'all', ...form }),
  });

export const accessToken = async (sim: SimulatedTenant): Promise<string> => {
  const response = await fetchToken(sim);
  const body = (await response.json()) as { access_token: string };
  return body.access_token;
};

/** A GET on the Management API as the code under test would make it (counted, subject to faults). */
export const apiGet = async (sim: SimulatedTenant, token: string, path: string): Promise<Response> =>
  fetch(`${sim.baseUrl}/api${path}`, { headers: { authorization: `Bearer ${token}` } });
