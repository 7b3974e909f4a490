import express, { type Router } from 'express';
import { z } from 'zod';
import type { OrganizationRoleRecord } from '../entities.js';
import { toOrganizationRoleResponse, toOrganizationRoleWithScopes } from '../entities.js';
import { LogtoApiError } from '../errors.js';
import { type ApiDependencies, hookContext, param, parseBody, respond } from '../http.js';
import { parsePagination, queryOf, sendPage } from '../pagination.js';
import { managementApiPayload } from '../payloads.js';
import { substringFilter } from '../search.js';

const createRoleBody = z.object({
  name: z.string().min(1),
  description: z.string().nullable().optional(),
  type: z.enum(['User', 'MachineToMachine']).optional(),
  organizationScopeIds: z.array(z.string().min(1)).optional(),
  resourceScopeIds: z.array(z.string().min(1)).optional(),
});

const updateRoleBody = z.object({
  name: z.string().min(1).optional(),
  description: z.string().nullable().optional(),
});

const roleSearchFields: ReadonlyArray<(role: Readonly<OrganizationRoleRecord>) => string | null> = [
  (role) => role.id,
  (role) => role.name,
  (role) => role.description,
];

/** `/organization-roles` routes: `packages/core/src/routes/organization-role/index.ts`. */
export const createOrganizationRoleRoutes = (dependencies: ApiDependencies): Router => {
  const { state } = dependencies;
  const router = express.Router();

  router.get('/organization-roles', (request, response) => {
    const query = queryOf(request);
    const pagination = parsePagination(query);
    const filter = substringFilter(query.get('q') ?? undefined, roleSearchFields);
    const roles = filter ? state.listOrganizationRoles().filter(filter) : state.listOrganizationRoles();
    sendPage(request, response, pagination, roles, toOrganizationRoleWithScopes);
  });

  router.get('/organization-roles/:id', (request, response) => {
    response.json(toOrganizationRoleWithScopes(state.requireOrganizationRole(param(request, 'id'))));
  });

  router.post('/organization-roles', (request, response) => {
    const body = parseBody(request, createRoleBody);
    // The simulator defines no scopes, so any scope id is unknown.
    if ((body.organizationScopeIds?.length ?? 0) > 0 || (body.resourceScopeIds?.length ?? 0) > 0) {
      throw new LogtoApiError(422, 'organization.roles.invalid_scope_ids');
    }
    const result = toOrganizationRoleResponse(
      state.createOrganizationRole({ name: body.name, description: body.description ?? null, type: body.type ?? 'User' }),
    );
    respond(dependencies, response, 201, result, [
      managementApiPayload('OrganizationRole.Created', hookContext(request, 201, '/organization-roles', {}), { data: result }),
    ]);
  });

  router.patch('/organization-roles/:id', (request, response) => {
    const id = param(request, 'id');
    const body = parseBody(request, updateRoleBody);
    const result = toOrganizationRoleResponse(state.updateOrganizationRole(id, body));
    respond(dependencies, response, 200, result, [
      managementApiPayload('OrganizationRole.Data.Updated', hookContext(request, 200, '/organization-roles/:id', { id }), {
        data: result,
      }),
    ]);
  });

  router.delete('/organization-roles/:id', (request, response) => {
    const id = param(request, 'id');
    // Silently taken from every member: no membership event, only OrganizationRole.Deleted.
    state.deleteOrganizationRole(id);
    respond(dependencies, response, 204, undefined, [
      managementApiPayload('OrganizationRole.Deleted', hookContext(request, 204, '/organization-roles/:id', { id })),
    ]);
  });

  return router;
};
