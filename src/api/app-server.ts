import { createServer, IncomingMessage, ServerResponse, type Server } from 'node:http';
import type express from 'express';

type Constructor = new (...args: never[]) => object;

/** A constructor that builds what `base` builds, with `prototype` as the instances' prototype. */
const constructing = (base: Constructor, prototype: object): Constructor => {
  function Built(...args: unknown[]): object {
    return Reflect.construct(base, args, Built);
  }
  Built.prototype = prototype;
  return Built as unknown as Constructor;
};

/**
 * The HTTP server for an express app, whose requests and responses are born with the app's prototypes.
 * Express gives every request and response its own prototype on arrival (`Object.setPrototypeOf`), and
 * V8 then builds a fresh hidden class for each of them: about 21 KB per request that outlives the young
 * generation's scavenges, which under 1,000 webhook arrivals a second doubled the scavenge pauses and the
 * loaded latency. Built with those prototypes already, express's `setPrototypeOf` finds nothing to change.
 */
export const createAppServer = (app: express.Express): Server =>
  createServer(
    {
      IncomingMessage: constructing(IncomingMessage, app.request) as typeof IncomingMessage,
      ServerResponse: constructing(ServerResponse, app.response) as unknown as typeof ServerResponse,
    },
    app,
  );
