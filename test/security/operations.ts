/** The operations of the OpenAPI document, for tests that walk or fuzz every route. */
type Json = Record<string, unknown>;
export type Schema = { type?: string; enum?: unknown[]; pattern?: string; minimum?: number; maximum?: number; properties?: Record<string, Schema>; items?: Schema; $ref?: string };

/** One operation of the OpenAPI document, as the fuzzer needs it. */
export type Operation = {
  method: string;
  path: string;
  pathParams: { name: string; schema: Schema }[];
  queryParams: { name: string; schema: Schema }[];
  body: Schema | undefined;
  scope: 'read' | 'write' | undefined;
};

/** Every operation the document lists, with `$ref`s of request bodies resolved: routes added later are fuzzed without a change here. */
export const operationsOf = (document: Json): Operation[] => {
  const schemas = ((document.components as Json).schemas ?? {}) as Record<string, Schema>;
  const resolve = (schema: Schema | undefined): Schema | undefined =>
    schema?.$ref ? resolve(schemas[schema.$ref.replace('#/components/schemas/', '')]) : schema;
  return Object.entries(document.paths as Record<string, Record<string, Json>>).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => {
      const parameters = (operation.parameters ?? []) as { name: string; in: string; schema: Schema }[];
      const body = (operation.requestBody as { content?: Record<string, { schema: Schema }> } | undefined)?.content?.['application/json']?.schema;
      return {
        method: method.toUpperCase(),
        path,
        pathParams: parameters.filter((parameter) => parameter.in === 'path'),
        queryParams: parameters.filter((parameter) => parameter.in === 'query'),
        body: resolve(body),
        scope: operation['x-required-scope'] as Operation['scope'],
      };
    }),
  );
};

