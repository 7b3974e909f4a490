import { AppError } from '../errors.js';
import { LogtoError, type LogtoUser } from '../logto/index.js';
import { addMembers, applyMembers, applyUsers, removeMembers, type ChangeContext } from './apply/index.js';
import type { SyncDeps } from './context.js';

export type ProvisionContext = { actor: string };

/**
 * Provisioning writes go to Logto first; what Logto answered is then applied through the same apply
 * functions as every other source, so the database shows the change at once and the change log says who
 * made it. The webhook that Logto echoes afterwards finds nothing left to change.
 */
export const createProvisioning = (deps: SyncDeps) => {
  const db = deps.database.db;
  const context = (ctx: ProvisionContext, observedAt: Date): ChangeContext => ({
    source: 'provision',
    actor: ctx.actor,
    observedAt,
  });

  const ensureUsersKnown = async (userIds: string[], ctx: ProvisionContext) => {
    const observedAt = new Date();
    const found = await deps.logto.findUsersByIds(userIds);
    await applyUsers(db, found, context(ctx, observedAt));
  };

  /** Re-reads one member's roles after a role write (Logto's role routes answer without the resulting set). */
  const refreshMemberRoles = async (organizationId: string, userId: string, ctx: ProvisionContext) => {
    const observedAt = new Date();
    const roles = await deps.logto.getOrganizationMemberRoles(organizationId, userId);
    const result = await applyMembers(
      db,
      organizationId,
      [{ userId, organizationRoleIds: roles.map((role) => role.id) }],
      context(ctx, observedAt),
    );
    if (result.unknownUserIds.length > 0 || result.unknownRoleIds.length > 0 || !result.organizationKnown) {
      throw new AppError(
        409,
        'not_synced',
        'Logto accepted the change, but the organization, user or role is not in the mirror yet; it will appear after the next sync',
      );
    }
  };

  return {
    async createUser(
      input: { username?: string; primaryEmail?: string; primaryPhone?: string; name?: string; password?: string },
      ctx: ProvisionContext,
    ): Promise<LogtoUser> {
      const user = await translate(() => deps.logto.createUser(input));
      await applyUsers(db, [user], context(ctx, new Date()));
      return user;
    },

    async setUserSuspended(userId: string, isSuspended: boolean, ctx: ProvisionContext): Promise<LogtoUser> {
      const user = await translate(() => deps.logto.setUserSuspended(userId, isSuspended));
      await applyUsers(db, [user], context(ctx, new Date()));
      return user;
    },

    async addMembers(organizationId: string, userIds: string[], ctx: ProvisionContext): Promise<void> {
      await translate(() => deps.logto.addOrganizationMembers(organizationId, userIds));
      const observedAt = new Date();
      const result = await addMembers(db, organizationId, userIds, context(ctx, observedAt));
      if (result.unknownUserIds.length > 0) {
        await ensureUsersKnown(result.unknownUserIds, ctx);
        await addMembers(db, organizationId, result.unknownUserIds, context(ctx, observedAt));
      }
    },

    async removeMember(organizationId: string, userId: string, ctx: ProvisionContext): Promise<void> {
      await translate(() => deps.logto.removeOrganizationMember(organizationId, userId));
      await removeMembers(db, organizationId, [userId], context(ctx, new Date()));
    },

    async grantRoles(organizationId: string, userId: string, organizationRoleIds: string[], ctx: ProvisionContext) {
      await translate(() => deps.logto.assignOrganizationMemberRoles(organizationId, userId, organizationRoleIds));
      await refreshMemberRoles(organizationId, userId, ctx);
    },

    async revokeRole(organizationId: string, userId: string, organizationRoleId: string, ctx: ProvisionContext) {
      await translate(() => deps.logto.removeOrganizationMemberRole(organizationId, userId, organizationRoleId));
      await refreshMemberRoles(organizationId, userId, ctx);
    },
  };
};

export type Provisioning = ReturnType<typeof createProvisioning>;

/** Logto's answer to a rejected write becomes an error the caller can act on; Logto being down is a 502. */
const translate = async <T>(call: () => Promise<T>): Promise<T> => {
  try {
    return await call();
  } catch (error) {
    if (error instanceof LogtoError) {
      if (error.kind === 'api' && error.status !== undefined && error.status >= 400 && error.status < 500) {
        const status = error.status === 404 ? 404 : error.status === 403 ? 403 : 422;
        throw new AppError(status, `logto.${error.code ?? 'rejected'}`, `Logto rejected the change: ${error.message}`, {
          logtoStatus: error.status,
          logtoCode: error.code,
        });
      }
      throw new AppError(502, 'logto_unavailable', `Logto could not be reached to make the change: ${error.message}`);
    }
    throw error;
  }
};
