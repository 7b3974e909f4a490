import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The subscribers of `bench/events.ts`, in a process of their own (as subscribers are in life), so that
 * answering thousands of requests a second does not share the sender's event loop. `argv[2]` receivers
 * listen on 127.0.0.1; talks to its parent over IPC:
 *   → { type: 'ready', urls }                                   once listening
 *   ← { type: 'track', on }                                      report first arrivals at receiver 0 (or stop)
 *   → { type: 'arrival', changeId, at }                          `at`: wall-clock ms (timeOrigin + now)
 *   ← { type: 'count', id }  → { type: 'count', id, requests }   requests answered so far, all receivers
 */
type Message = { type: 'track'; on: boolean } | { type: 'count'; id: number };

const count = Number(process.argv[2] ?? '1');
let requests = 0;
let tracking = false;
const seen = new Set<number>();

const listen = (index: number) =>
  new Promise<string>((resolve) => {
    const server = http.createServer((req, res) => {
      req.on('data', () => {});
      req.on('end', () => {
        requests += 1;
        if (tracking && index === 0) {
          const id = req.headers['webhook-id'];
          if (typeof id === 'string' && id.startsWith('evt_')) {
            const changeId = Number(id.slice(4));
            if (!seen.has(changeId)) {
              seen.add(changeId);
              process.send!({ type: 'arrival', changeId, at: performance.timeOrigin + performance.now() });
            }
          }
        }
        res.statusCode = 204;
        res.end();
      });
    });
    server.keepAliveTimeout = 60_000;
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`));
  });

process.on('message', (message: Message) => {
  if (message.type === 'track') tracking = message.on;
  else if (message.type === 'count') process.send!({ type: 'count', id: message.id, requests });
});
process.on('disconnect', () => process.exit(0));

const urls = await Promise.all(Array.from({ length: count }, (_, index) => listen(index)));
process.send!({ type: 'ready', urls });
