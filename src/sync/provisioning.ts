import { AppError } from '../errors.js';
import { findMemberRoleIds, findOrganizationRoleTypes } from '../db/queries/member-roles.js';
import {
  isLogtoError,
  isNotFound,
  isNotMember,
  LogtoError,
  type LogtoOrganizationRole,
  type LogtoOrganizationRoleRef,
  type LogtoUser,
} from '../logto/index.js';
import {
  addMembers,
  applyMembers,
  applyOrganizationRoles,
  applyOrganizations,
  applyUsers,
  removeMembers,
  type ChangeContext,
} from './apply/index.js';
import type { SyncDeps } from './context.js';

export type ProvisionContext = { actor: string };

/** A member as Logto answered it after the write (and as the mirror now stores it). */
export type ProvisionedMember = { organizationId: string; userId: string; organizationRoles: LogtoOrganizationRoleRef[] };

/** `created`: the write changed something in Logto (201); false: it was already so (200). */
export type MemberOutcome = { created: boolean; member: ProvisionedMember };

export type BulkMembersOutcome = {
  organizationId: string;
  userIds: string[];
  organizationRoleIds: string[];
};

/** What a lookup after a refusal is about: only these ids are checked. */
type Subject = { organizationId?: string; userIds?: string[]; organizationRoleIds?: string[] };

/** Logto's answer that led to a problem: kept in the problem body as `logtoStatus`/`logtoCode`. */
type Refusal = { status?: number | undefined; code?: string | undefined };

/** What Logto answers for a user who is not a member (the reads and writes under `…/users/:userId/roles`). */
const membershipRequired: Refusal = { status: 422, code: 'organization.require_membership' };

const logtoDetails = (refusal: Refusal | undefined): Record<string, unknown> => ({
  ...(refusal?.status !== undefined ? { logtoStatus: refusal.status } : {}),
  ...(refusal?.code ? { logtoCode: refusal.code } : {}),
});

const refusalOf = (error: unknown): Refusal | undefined => (isLogtoError(error) ? error : undefined);

/** How long a caller should wait before retrying after Logto could not be reached or throttled us. */
const retryAfterSeconds = (error: LogtoError): number => (error.kind === 'rate_limited' ? 10 : 5);

/**
 * Logto's answer as the caller's status: the problem keeps Logto's status and code. A refusal about the
 * request is a 4xx; Logto being down, throttling or misconfigured is a 502 with `Retry-After`.
 */
export const translateLogtoError = (error: unknown): unknown => {
  if (!isLogtoError(error)) return error;
  const details = logtoDetails(error);
  if (error.kind === 'api' && error.status !== undefined && error.status >= 400 && error.status < 500 && error.status !== 429) {
    if (error.status === 403) {
      const quota = error.code === 'subscription.limit_exceeded';
      return new AppError(
        403,
        quota ? 'quota_exceeded' : 'logto_forbidden',
        quota ? `The Logto plan's quota does not allow this change: ${error.message}` : `Logto refused the change: ${error.message}`,
        details,
      );
    }
    if (error.status === 404) return new AppError(404, 'not_found', `Logto found nothing to change: ${error.message}`, details);
    if (error.status === 409) return new AppError(409, 'conflict', `Logto refused the change: ${error.message}`, details);
    return new AppError(422, 'logto_rejected', `Logto rejected the change: ${error.message}`, details);
  }
  if (error.kind === 'credentials' || error.kind === 'scope') {
    return new AppError(502, 'logto_misconfigured', 'This service cannot act on Logto: its Logto credentials or permissions are wrong', details, {
      'Retry-After': '60',
    });
  }
  const uncertain = error.kind === 'timeout' ? ' The write may have been applied: retry with the same Idempotency-Key, or read the state first.' : '';
  return new AppError(502, 'logto_unavailable', `Logto could not make the change now (${error.kind}).${uncertain}`, details, {
    'Retry-After': String(retryAfterSeconds(error)),
  });
};

const logto = async <T>(call: () => Promise<T>): Promise<T> => {
  try {
    return await call();
  } catch (error) {
    throw translateLogtoError(error);
  }
};

/**
 * A role write refused for a non-member right after this request added the member: another change (a
 * removal in Logto's console, another client) took the membership away in between. That is a conflict
 * with that change, not a request Logto cannot process: nothing was granted, and the same request again
 * adds the member anew. Without it the refusal surfaced as a 422 `logto_rejected`.
 */
const removedMeanwhile = (organizationId: string, userId: string, call: () => Promise<void>) => async (): Promise<void> => {
  try {
    await call();
  } catch (error) {
    if (!isNotMember(error)) throw error;
    throw new AppError(
      409,
      'conflict',
      `User ${userId} was removed from organization ${organizationId} by another change after this request added the membership; no role was granted: send the request again`,
      { organizationId, userId, ...logtoDetails(membershipRequired) },
    );
  }
};

const notMember = (organizationId: string, userId: string) =>
  new AppError(
    409,
    'not_a_member',
    `User ${userId} is not a member of organization ${organizationId}: add the membership first, or send ?addMember=true`,
    { organizationId, userId, ...logtoDetails(membershipRequired) },
  );

/**
 * Provisioning writes go to Logto first; what Logto then reports is applied through the same apply
 * functions as every other source, so the database shows the change at once and the change log says who
 * made it. The webhook that Logto echoes afterwards finds nothing left to change.
 *
 * Every operation is safe to repeat: a grant that already holds and a revoke of what is already gone
 * succeed. Logto's 404/422 do not say which id was unknown, so a refusal is followed by lookups that
 * name it (only then: the happy path costs no extra call).
 */
export const createProvisioning = (deps: SyncDeps) => {
  const db = deps.database.db;
  const context = (ctx: ProvisionContext, observedAt: Date): ChangeContext => ({
    source: 'provision',
    actor: ctx.actor,
    observedAt,
  });

  /**
   * Which of the subject's ids Logto does not have (404), or which role cannot go to users (422). Throws; returns
   * when all exist. `refusal`: Logto's answer that made us look, kept in the problem (none for checks made before writing).
   */
  const assertExists = async (subject: Subject, options: { roleTypes?: boolean; refusal?: Refusal } = {}): Promise<void> => {
    const refused = logtoDetails(options.refusal);
    const roleIds = [...new Set(subject.organizationRoleIds ?? [])];
    const userIds = [...new Set(subject.userIds ?? [])];
    const [organization, foundUsers, roles] = await logto(() =>
      Promise.all([
        subject.organizationId === undefined ? Promise.resolve(undefined) : deps.logto.getOrganization(subject.organizationId),
        userIds.length === 0 ? Promise.resolve([]) : deps.logto.findUsersByIds(userIds),
        Promise.all(roleIds.map((id) => deps.logto.getOrganizationRole(id))),
      ]),
    );
    if (organization === null) {
      throw new AppError(404, 'organization_not_found', `Organization ${subject.organizationId} does not exist in Logto`, {
        organizationId: subject.organizationId,
        ...refused,
      });
    }
    const found = new Set(foundUsers.map((user) => user.id));
    const missingUsers = userIds.filter((id) => !found.has(id));
    if (missingUsers.length > 0) {
      throw new AppError(404, 'user_not_found', `No such user in Logto: ${missingUsers.join(', ')}`, { userIds: missingUsers, ...refused });
    }
    const missingRoles = roleIds.filter((_, index) => roles[index] === null);
    if (missingRoles.length > 0) {
      throw new AppError(404, 'organization_role_not_found', `No such organization role in Logto: ${missingRoles.join(', ')}`, {
        organizationRoleIds: missingRoles,
        ...refused,
      });
    }
    if (options.roleTypes ?? true) {
      assertUserRoles(
        roles.filter((role): role is LogtoOrganizationRole => role !== null).map((role) => ({ id: role.id, type: role.type })),
        options.refusal,
      );
    }
  };

  const assertUserRoles = (roles: { id: string; type: string | undefined }[], refusal?: Refusal) => {
    const wrong = roles.filter((role) => role.type !== undefined && role.type !== 'User').map((role) => role.id);
    if (wrong.length > 0) {
      throw new AppError(
        422,
        'organization_role_wrong_type',
        `Only organization roles of type User can be given to users: ${wrong.join(', ')} ${wrong.length === 1 ? 'is' : 'are'} for machine-to-machine applications`,
        { organizationRoleIds: wrong, ...logtoDetails(refusal) },
      );
    }
  };

  /**
   * Roles are checked against the mirror first (no call to Logto); only roles it does not know are looked
   * up. Used before writes that cannot be undone if a later call is refused (adding a member first).
   */
  const assertRolesAssignable = async (roleIds: string[]) => {
    if (roleIds.length === 0) return;
    const stored = await findOrganizationRoleTypes(db, roleIds);
    assertUserRoles([...stored].map(([id, type]) => ({ id, type })));
    const unknown = roleIds.filter((id) => !stored.has(id));
    if (unknown.length > 0) await assertExists({ organizationRoleIds: unknown });
  };

  /** A refused write: name the unknown id when that is why, otherwise map Logto's answer. */
  const explainRefusal = async (error: unknown, subject: Subject): Promise<never> => {
    if (isLogtoError(error) && error.kind === 'api' && (error.status === 400 || error.status === 404 || error.status === 422)) {
      await assertExists(subject, { refusal: error });
    }
    throw translateLogtoError(error);
  };

  const write = async (call: () => Promise<void>, subject: Subject): Promise<void> => {
    try {
      await call();
    } catch (error) {
      await explainRefusal(error, subject);
    }
  };

  /** Makes the mirror know the organization, user and roles a member snapshot refers to. */
  const learnEntities = async (
    organizationKnown: boolean,
    userIds: string[],
    roleIds: string[],
    organizationId: string,
    ctx: ProvisionContext,
  ) => {
    const observedAt = new Date();
    const [organization, users, roles] = await logto(() =>
      Promise.all([
        organizationKnown ? Promise.resolve(null) : deps.logto.getOrganization(organizationId),
        userIds.length === 0 ? Promise.resolve([] as LogtoUser[]) : deps.logto.findUsersByIds(userIds),
        Promise.all(roleIds.map((id) => deps.logto.getOrganizationRole(id))),
      ]),
    );
    if (organization) await applyOrganizations(db, [organization], context(ctx, observedAt));
    if (users.length > 0) await applyUsers(db, users, context(ctx, observedAt));
    const found = roles.filter((role): role is LogtoOrganizationRole => role !== null);
    if (found.length > 0) await applyOrganizationRoles(db, found, context(ctx, observedAt));
  };

  /** Applies one member as Logto reported it (null: not a member) and returns it. */
  const applyMember = async (
    organizationId: string,
    userId: string,
    roles: LogtoOrganizationRoleRef[] | null,
    observedAt: Date,
    ctx: ProvisionContext,
  ): Promise<ProvisionedMember> => {
    if (roles === null) {
      await removeMembers(db, organizationId, [userId], context(ctx, observedAt));
      return { organizationId, userId, organizationRoles: [] };
    }
    const snapshot = [{ userId, organizationRoleIds: roles.map((role) => role.id) }];
    let result = await applyMembers(db, organizationId, snapshot, context(ctx, observedAt));
    if (!result.organizationKnown || result.unknownUserIds.length > 0 || result.unknownRoleIds.length > 0) {
      await learnEntities(result.organizationKnown, result.unknownUserIds, result.unknownRoleIds, organizationId, ctx);
      result = await applyMembers(db, organizationId, snapshot, context(ctx, observedAt));
      if (!result.organizationKnown || result.unknownUserIds.length > 0 || result.unknownRoleIds.length > 0) {
        throw new AppError(
          409,
          'not_synced',
          'Logto accepted the change, but the organization, user or role vanished from Logto before it could be copied; the next sync settles it',
        );
      }
    }
    return { organizationId, userId, organizationRoles: roles };
  };

  /** Reads the member back from Logto and applies it. */
  const readBackMember = async (organizationId: string, userId: string, ctx: ProvisionContext): Promise<ProvisionedMember> => {
    const observedAt = new Date();
    const roles = await logto(() => deps.logto.findOrganizationMemberRoles(organizationId, userId));
    if (roles === null) {
      await applyMember(organizationId, userId, null, observedAt, ctx);
      throw new AppError(409, 'conflict', `User ${userId} left organization ${organizationId} again while the change was made; try again`);
    }
    return applyMember(organizationId, userId, roles, observedAt, ctx);
  };

  /** Adds the membership in Logto (the user must not be a member yet, or it is a no-op). */
  const addMembership = (organizationId: string, userId: string) =>
    write(() => deps.logto.addOrganizationMembers(organizationId, [userId]), { organizationId, userIds: [userId] });

  return {
    async createUser(
      input: { username?: string; primaryEmail?: string; primaryPhone?: string; name?: string; password?: string },
      ctx: ProvisionContext,
    ): Promise<LogtoUser> {
      const user = await logto(() => deps.logto.createUser(input));
      await applyUsers(db, [user], context(ctx, new Date()));
      return user;
    },

    async setUserSuspended(userId: string, isSuspended: boolean, ctx: ProvisionContext): Promise<LogtoUser> {
      let user: LogtoUser;
      try {
        user = await deps.logto.setUserSuspended(userId, isSuspended);
      } catch (error) {
        if (isNotFound(error)) {
          throw new AppError(404, 'user_not_found', `No such user in Logto: ${userId}`, {
            userIds: [userId],
            ...logtoDetails(refusalOf(error)),
          });
        }
        throw translateLogtoError(error);
      }
      await applyUsers(db, [user], context(ctx, new Date()));
      return user;
    },

    /** `PUT …/members/:userId`: a member afterwards; `created` when it was not one before. */
    async addMember(organizationId: string, userId: string, ctx: ProvisionContext): Promise<MemberOutcome> {
      const observedAt = new Date();
      const before = await logto(() => deps.logto.findOrganizationMemberRoles(organizationId, userId));
      if (before !== null) return { created: false, member: await applyMember(organizationId, userId, before, observedAt, ctx) };
      await addMembership(organizationId, userId);
      return { created: true, member: await readBackMember(organizationId, userId, ctx) };
    },

    /** Bulk add (`POST …/members`): one call to add, one to grant the roles to all of them. */
    async addMembers(
      organizationId: string,
      userIds: string[],
      organizationRoleIds: string[],
      ctx: ProvisionContext,
    ): Promise<BulkMembersOutcome> {
      // Checked before anything is written: a refused grant after the members were added would be half a change.
      await assertRolesAssignable(organizationRoleIds);
      await write(() => deps.logto.addOrganizationMembers(organizationId, userIds), { organizationId, userIds });
      if (organizationRoleIds.length > 0) {
        await write(() => deps.logto.assignOrganizationRolesToMembers(organizationId, userIds, organizationRoleIds), {
          organizationId,
          userIds,
          organizationRoleIds,
        });
      }
      // Applied as the delta Logto confirmed (members added, roles added to what they held), not re-read
      // member by member: that would cost one call per user.
      const observedAt = new Date();
      const added = await addMembers(db, organizationId, userIds, context(ctx, observedAt));
      if (!added.organizationKnown || added.unknownUserIds.length > 0) {
        await learnEntities(added.organizationKnown, added.unknownUserIds, [], organizationId, ctx);
        await addMembers(db, organizationId, userIds, context(ctx, observedAt));
      }
      if (organizationRoleIds.length > 0) {
        const held = await findMemberRoleIds(db, organizationId, userIds);
        const snapshot = userIds.map((userId) => ({
          userId,
          organizationRoleIds: [...new Set([...(held.get(userId) ?? []), ...organizationRoleIds])],
        }));
        const granted = await applyMembers(db, organizationId, snapshot, context(ctx, observedAt));
        if (granted.unknownRoleIds.length > 0) {
          await learnEntities(true, [], granted.unknownRoleIds, organizationId, ctx);
          await applyMembers(db, organizationId, snapshot, context(ctx, observedAt));
        }
      }
      return { organizationId, userIds, organizationRoleIds };
    },

    /** `DELETE …/members/:userId`: not a member afterwards, whether it was one or not. */
    async removeMember(organizationId: string, userId: string, ctx: ProvisionContext): Promise<void> {
      try {
        await deps.logto.removeOrganizationMember(organizationId, userId);
      } catch (error) {
        // Logto's 404 is the same for a non-member and for an unknown organization or user: look which.
        if (!isNotFound(error)) throw translateLogtoError(error);
        await assertExists({ organizationId, userIds: [userId] }, { refusal: refusalOf(error) });
      }
      await removeMembers(db, organizationId, [userId], context(ctx, new Date()));
    },

    /** `POST …/members/:userId/roles`: grants roles (held ones stay), answering the member as Logto has it now. */
    async grantRoles(organizationId: string, userId: string, organizationRoleIds: string[], ctx: ProvisionContext): Promise<ProvisionedMember> {
      try {
        await deps.logto.assignOrganizationMemberRoles(organizationId, userId, organizationRoleIds);
      } catch (error) {
        if (isNotMember(error)) {
          await assertExists({ organizationId, userIds: [userId], organizationRoleIds }, { refusal: membershipRequired });
          throw notMember(organizationId, userId);
        }
        await explainRefusal(error, { organizationRoleIds });
      }
      return readBackMember(organizationId, userId, ctx);
    },

    /** `PUT …/members/:userId/roles/:roleId`: holds the role afterwards; `created` when it did not before. */
    async grantRole(
      organizationId: string,
      userId: string,
      organizationRoleId: string,
      options: { addMember: boolean },
      ctx: ProvisionContext,
    ): Promise<MemberOutcome> {
      const observedAt = new Date();
      const before = await logto(() => deps.logto.findOrganizationMemberRoles(organizationId, userId));
      if (before === null) {
        if (!options.addMember) {
          await assertExists({ organizationId, userIds: [userId], organizationRoleIds: [organizationRoleId] }, { refusal: membershipRequired });
          throw notMember(organizationId, userId);
        }
        await assertRolesAssignable([organizationRoleId]);
        await addMembership(organizationId, userId);
      } else if (before.some((role) => role.id === organizationRoleId)) {
        return { created: false, member: await applyMember(organizationId, userId, before, observedAt, ctx) };
      }
      const assign = () => deps.logto.assignOrganizationMemberRoles(organizationId, userId, [organizationRoleId]);
      await write(before === null ? removedMeanwhile(organizationId, userId, assign) : assign, { organizationRoleIds: [organizationRoleId] });
      return { created: true, member: await readBackMember(organizationId, userId, ctx) };
    },

    /** `PUT …/members/:userId/roles`: exactly these roles afterwards. */
    async setRoles(
      organizationId: string,
      userId: string,
      organizationRoleIds: string[],
      options: { addMember: boolean },
      ctx: ProvisionContext,
    ): Promise<ProvisionedMember> {
      const replace = () => deps.logto.replaceOrganizationMemberRoles(organizationId, userId, organizationRoleIds);
      try {
        await replace();
      } catch (error) {
        if (!isNotMember(error)) await explainRefusal(error, { organizationRoleIds });
        if (!options.addMember) {
          await assertExists({ organizationId, userIds: [userId], organizationRoleIds }, { refusal: membershipRequired });
          throw notMember(organizationId, userId);
        }
        await assertRolesAssignable(organizationRoleIds);
        await addMembership(organizationId, userId);
        await write(removedMeanwhile(organizationId, userId, replace), { organizationRoleIds });
      }
      return readBackMember(organizationId, userId, ctx);
    },

    /** `DELETE …/members/:userId/roles/:roleId`: does not hold it afterwards (also when it never did, or is no member). */
    async revokeRole(organizationId: string, userId: string, organizationRoleId: string, ctx: ProvisionContext): Promise<void> {
      try {
        await deps.logto.removeOrganizationMemberRole(organizationId, userId, organizationRoleId);
      } catch (error) {
        if (isNotMember(error)) {
          await assertExists(
            { organizationId, userIds: [userId], organizationRoleIds: [organizationRoleId] },
            { roleTypes: false, refusal: refusalOf(error) },
          );
          // Logto says the user is no member: so be it in the mirror too.
          await removeMembers(db, organizationId, [userId], context(ctx, new Date()));
          return;
        }
        if (!isNotFound(error)) throw translateLogtoError(error);
        // A member, but the role is not held, or does not exist at all: only the latter is an error.
        await assertExists({ organizationRoleIds: [organizationRoleId] }, { roleTypes: false, refusal: refusalOf(error) });
      }
      const observedAt = new Date();
      const roles = await logto(() => deps.logto.findOrganizationMemberRoles(organizationId, userId));
      await applyMember(organizationId, userId, roles, observedAt, ctx);
    },
  };
};

export type Provisioning = ReturnType<typeof createProvisioning>;
