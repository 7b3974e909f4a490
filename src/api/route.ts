import type { Request, Response } from 'express';
import type { z } from 'zod';
import type { ApiDeps } from './app.js';
import type { Principal } from './auth.js';

/**
 * A response body already written as JSON (by PostgreSQL): sent as it is, without a parse and a
 * serialise in between. It must be what the route's schema describes (checked where responses are).
 */
export class JsonText {
  constructor(readonly text: string) {}
}

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** Who may call a route: anyone, or a key with at least this scope (write includes read). */
export type RouteAuth = 'none' | 'read' | 'write';

type AnyObject = z.ZodObject;
type Output<S> = S extends z.ZodType ? z.output<S> : undefined;

export type RouteContext<P, Q, B> = {
  params: P;
  query: Q;
  body: B;
  deps: ApiDeps;
  /** The caller's key; null only on routes with `auth: 'none'`. */
  principal: Principal | null;
  /** `X-Access-State-As-Of` of this response (null: never synced); read routes only. */
  asOf: Date | null;
  req: Request;
  res: Response;
};

export type RouteSpec<
  P extends AnyObject | undefined,
  Q extends AnyObject | undefined,
  B extends z.ZodType | undefined,
  R extends z.ZodType | undefined,
> = {
  method: HttpMethod;
  /** Express path, e.g. `/v1/users/:id`; the OpenAPI path is derived from it. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  auth: RouteAuth;
  params?: P;
  query?: Q;
  body?: B;
  success: {
    status: 200 | 201 | 202 | 204;
    description: string;
    /** The JSON body the handler returns. Without it, the route answers 204 or writes a raw body itself. */
    schema?: R;
    /** For raw bodies: the media type the handler writes (documented in OpenAPI). */
    contentType?: string;
    /**
     * A second success status with the same body (e.g. 200 "already so" beside 201 "created"); the
     * handler selects it by setting `res.locals.successStatus`.
     */
    also?: { status: 200 | 201 | 202; description: string };
  };
  /** Error statuses beyond those implied by auth and parameters (400, 401, 403, 500). */
  errors?: number[];
  handler: (context: RouteContext<Output<P>, Output<Q>, Output<B>>) => Promise<(R extends z.ZodType ? z.input<R> : void) | JsonText>;
};

/** A route with its types erased, as the app and the OpenAPI generator see it. */
export type Route = RouteSpec<AnyObject | undefined, AnyObject | undefined, z.ZodType | undefined, z.ZodType | undefined> & {
  handler: (context: RouteContext<unknown, unknown, unknown>) => Promise<unknown>;
};

/**
 * Declares one endpoint: its request schemas (which validate the request), its response schema
 * (which describes, and in tests checks, the response) and its handler. The same declaration
 * feeds the OpenAPI document, so documentation cannot drift from behaviour.
 */
export const defineRoute = <
  P extends AnyObject | undefined = undefined,
  Q extends AnyObject | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
  R extends z.ZodType | undefined = undefined,
>(
  spec: RouteSpec<P, Q, B, R>,
): Route => spec as unknown as Route;
