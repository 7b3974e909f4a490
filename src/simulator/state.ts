import type {
  JsonObject,
  OrganizationRecord,
  OrganizationRoleRecord,
  OrganizationRoleType,
  UserRecord,
} from './entities.js';
import { toOrganizationResponse, toOrganizationRoleResponse, toUserResponse } from './entities.js';
import type { OrganizationResponse, OrganizationRoleResponse, UserResponse } from './entities.js';
import { foreignKeyNotFound, LogtoApiError, notExistsWithId, notFound, requireMembership } from './errors.js';
import { generateId, organizationIdLength, standardIdLength, userIdLength } from './ids.js';

export interface CreateUserInput {
  username?: string | null;
  primaryEmail?: string | null;
  primaryPhone?: string | null;
  name?: string | null;
  avatar?: string | null;
  customData?: JsonObject;
  identities?: JsonObject;
  profile?: JsonObject;
  lastSignInAt?: number | null;
  applicationId?: string | null;
  isSuspended?: boolean;
  hasPassword?: boolean;
}

export type UpdateUserInput = Partial<
  Pick<
    UserRecord,
    | 'username'
    | 'primaryEmail'
    | 'primaryPhone'
    | 'name'
    | 'avatar'
    | 'customData'
    | 'identities'
    | 'profile'
    | 'lastSignInAt'
    | 'hasPassword'
  >
>;

export interface CreateOrganizationInput {
  name: string;
  description?: string | null;
  customData?: JsonObject;
  isMfaRequired?: boolean;
  color?: JsonObject;
  branding?: JsonObject;
  customCss?: string | null;
}

export type UpdateOrganizationInput = Partial<CreateOrganizationInput>;

export interface CreateOrganizationRoleInput {
  name: string;
  description?: string | null;
  type?: OrganizationRoleType;
}

export type UpdateOrganizationRoleInput = Partial<Pick<OrganizationRoleRecord, 'name' | 'description'>>;

/** Overrides for generated data: fixed ids and timestamps instead of fresh ones. */
export interface RecordMeta {
  id?: string;
  createdAt?: number;
  updatedAt?: number;
}

export interface TenantStateOptions {
  /** Put in `tenantId` of organizations and roles. Default `'default'`, as on self-hosted Logto. */
  tenantId?: string;
  /** Wall clock in epoch ms; tests may pin it. */
  now?: () => number;
}

export interface TenantCounts {
  users: number;
  organizations: number;
  organizationRoles: number;
  memberships: number;
  memberRoles: number;
}

/** Everything in the tenant as plain JSON, in a stable order: for comparing two tenants. */
export interface TenantSnapshot {
  users: UserResponse[];
  organizations: OrganizationResponse[];
  organizationRoles: OrganizationRoleResponse[];
  /** organizationId → userId → role ids (sorted), organizations and users sorted by id. */
  memberships: Record<string, Record<string, string[]>>;
}

/** Role names sort like Logto's `order by name`; we compare code points, i.e. the "C" collation. */
const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const lower = (value: string | null | undefined) => (value ? value.toLowerCase() : undefined);

/**
 * The in-memory access state of one Logto tenant, with Logto's cascades (the foreign keys of
 * `organization_user_relations` and `organization_role_user_relations`) and Logto's list orders.
 *
 * Every mutation here is silent: no webhook. The Management API routes call these methods and add
 * the webhooks Logto would send; tests call them directly to make changes that Logto would not
 * report (which is also exactly what Logto does for every member-role change).
 */
export class TenantState {
  readonly tenantId: string;
  readonly #now: () => number;
  #lastTick = 0;

  readonly #users = new Map<string, UserRecord>();
  readonly #usernames = new Map<string, string>();
  readonly #emails = new Map<string, string>();
  readonly #phones = new Map<string, string>();
  #usersNewestFirst: UserRecord[] | undefined;

  readonly #organizations = new Map<string, OrganizationRecord>();
  readonly #roles = new Map<string, OrganizationRoleRecord>();
  readonly #roleNames = new Map<string, string>();
  #rolesByName: OrganizationRoleRecord[] | undefined;

  /** organizationId → userId → role ids. A user is a member when it has an entry. */
  readonly #members = new Map<string, Map<string, Set<string>>>();
  /** userId → organization ids, in the order the user joined them. */
  readonly #userOrganizations = new Map<string, Set<string>>();
  readonly #sortedMemberIds = new Map<string, string[]>();

  constructor(options: TenantStateOptions = {}) {
    this.tenantId = options.tenantId ?? 'default';
    this.#now = options.now ?? Date.now;
  }

  /**
   * A timestamp strictly after every one handed out before. Logto's `updated_at` comes from
   * `now()` and could repeat within a millisecond; a strictly increasing clock lets a consumer use
   * `updatedAt` to order two versions of a user, and makes `created_at desc` a total order.
   */
  tick(): number {
    const next = Math.max(this.#now(), this.#lastTick + 1);
    this.#lastTick = next;
    return next;
  }

  #observe(...timestamps: Array<number | undefined>) {
    for (const timestamp of timestamps) {
      if (timestamp !== undefined && timestamp > this.#lastTick) this.#lastTick = timestamp;
    }
  }

  // ---------------------------------------------------------------- users

  #assertUserIdentifiersFree(input: { username?: string | null; primaryEmail?: string | null; primaryPhone?: string | null }, userId?: string) {
    const taken = (index: Map<string, string>, key: string | undefined) => {
      if (key === undefined) return false;
      const owner = index.get(key);
      return owner !== undefined && owner !== userId;
    };
    if (taken(this.#usernames, lower(input.username))) throw new LogtoApiError(422, 'user.username_already_in_use');
    if (taken(this.#emails, lower(input.primaryEmail))) throw new LogtoApiError(422, 'user.email_already_in_use');
    if (taken(this.#phones, input.primaryPhone ?? undefined)) throw new LogtoApiError(422, 'user.phone_already_in_use');
  }

  #indexUser(user: UserRecord) {
    const username = lower(user.username);
    const email = lower(user.primaryEmail);
    if (username) this.#usernames.set(username, user.id);
    if (email) this.#emails.set(email, user.id);
    if (user.primaryPhone) this.#phones.set(user.primaryPhone, user.id);
  }

  #unindexUser(user: UserRecord) {
    const username = lower(user.username);
    const email = lower(user.primaryEmail);
    if (username) this.#usernames.delete(username);
    if (email) this.#emails.delete(email);
    if (user.primaryPhone) this.#phones.delete(user.primaryPhone);
  }

  createUser(input: CreateUserInput = {}, meta: RecordMeta = {}): UserRecord {
    this.#assertUserIdentifiersFree(input);
    const id = meta.id ?? this.#freshId(userIdLength, this.#users);
    if (this.#users.has(id)) throw new LogtoApiError(422, 'entity.unique_integrity_violation');
    this.#observe(meta.createdAt, meta.updatedAt);
    const createdAt = meta.createdAt ?? this.tick();
    const user: UserRecord = {
      id,
      username: input.username ?? null,
      primaryEmail: input.primaryEmail ?? null,
      primaryPhone: input.primaryPhone ?? null,
      name: input.name ?? null,
      avatar: input.avatar ?? null,
      customData: structuredClone(input.customData ?? {}),
      identities: structuredClone(input.identities ?? {}),
      lastSignInAt: input.lastSignInAt ?? null,
      createdAt,
      updatedAt: meta.updatedAt ?? createdAt,
      profile: structuredClone(input.profile ?? {}),
      applicationId: input.applicationId ?? null,
      cimdClientId: null,
      isSuspended: input.isSuspended ?? false,
      hasPassword: input.hasPassword ?? false,
    };
    this.#users.set(id, user);
    this.#indexUser(user);
    this.#usersNewestFirst = undefined;
    return user;
  }

  getUser(userId: string): Readonly<UserRecord> | undefined {
    return this.#users.get(userId);
  }

  /** Throws 404 `entity.not_found`, as Logto's `findUserById`. */
  requireUser(userId: string): Readonly<UserRecord> {
    const user = this.#users.get(userId);
    if (!user) throw notFound();
    return user;
  }

  /** `users.updated_at` is kept by a trigger on every row update; ours never repeats a value. */
  #touch(user: UserRecord) {
    user.updatedAt = this.tick();
  }

  /** Replaces the given fields (JSON fields too, like Logto's PATCH /users/:id). */
  updateUser(userId: string, patch: UpdateUserInput): Readonly<UserRecord> {
    const user = this.#users.get(userId);
    if (!user) throw notFound();
    this.#assertUserIdentifiersFree(patch, userId);
    this.#unindexUser(user);
    for (const [key, value] of Object.entries(patch) as Array<[keyof UpdateUserInput, unknown]>) {
      if (value === undefined) continue;
      (user as unknown as Record<string, unknown>)[key] = typeof value === 'object' && value !== null ? structuredClone(value) : value;
    }
    this.#indexUser(user);
    this.#touch(user);
    return user;
  }

  /** Shallow merge into `customData`, like Logto's jsonb `merge` mode. */
  mergeUserCustomData(userId: string, customData: JsonObject): Readonly<UserRecord> {
    const user = this.#users.get(userId);
    if (!user) throw notFound();
    user.customData = { ...user.customData, ...structuredClone(customData) };
    this.#touch(user);
    return user;
  }

  /** Shallow merge into `profile`. */
  mergeUserProfile(userId: string, profile: JsonObject): Readonly<UserRecord> {
    const user = this.#users.get(userId);
    if (!user) throw notFound();
    user.profile = { ...user.profile, ...structuredClone(profile) };
    this.#touch(user);
    return user;
  }

  setUserSuspended(userId: string, isSuspended: boolean): Readonly<UserRecord> {
    const user = this.#users.get(userId);
    if (!user) throw notFound();
    user.isSuspended = isSuspended;
    this.#touch(user);
    return user;
  }

  /** Deletes the user with its memberships and member roles (Logto's `on delete cascade`). */
  deleteUser(userId: string): UserRecord {
    const user = this.#users.get(userId);
    if (!user) throw notFound();
    for (const organizationId of this.#userOrganizations.get(userId) ?? []) {
      this.#members.get(organizationId)?.delete(userId);
      this.#sortedMemberIds.delete(organizationId);
    }
    this.#userOrganizations.delete(userId);
    this.#unindexUser(user);
    this.#users.delete(userId);
    this.#usersNewestFirst = undefined;
    return user;
  }

  /** Logto's `GET /users` order: `created_at desc` (later insertion first on a tie). */
  listUsers(): readonly Readonly<UserRecord>[] {
    if (!this.#usersNewestFirst) {
      this.#usersNewestFirst = [...this.#users.values()].reverse().sort((a, b) => b.createdAt - a.createdAt);
    }
    return this.#usersNewestFirst;
  }

  // ---------------------------------------------------------------- organizations

  createOrganization(input: CreateOrganizationInput, meta: RecordMeta = {}): Readonly<OrganizationRecord> {
    const id = meta.id ?? this.#freshId(organizationIdLength, this.#organizations);
    if (this.#organizations.has(id)) throw new LogtoApiError(422, 'entity.unique_integrity_violation');
    this.#observe(meta.createdAt);
    const organization: OrganizationRecord = {
      tenantId: this.tenantId,
      id,
      name: input.name,
      description: input.description ?? null,
      customData: structuredClone(input.customData ?? {}),
      isMfaRequired: input.isMfaRequired ?? false,
      color: structuredClone(input.color ?? {}),
      branding: structuredClone(input.branding ?? {}),
      customCss: input.customCss ?? null,
      createdAt: meta.createdAt ?? this.tick(),
    };
    this.#organizations.set(id, organization);
    this.#members.set(id, new Map());
    return organization;
  }

  getOrganization(organizationId: string): Readonly<OrganizationRecord> | undefined {
    return this.#organizations.get(organizationId);
  }

  /** Throws 404 `entity.not_exists_with_id`, as Logto's generic `findById`. */
  requireOrganization(organizationId: string): Readonly<OrganizationRecord> {
    const organization = this.#organizations.get(organizationId);
    if (!organization) throw notExistsWithId('organizations', organizationId);
    return organization;
  }

  updateOrganization(organizationId: string, patch: UpdateOrganizationInput): Readonly<OrganizationRecord> {
    const organization = this.#organizations.get(organizationId);
    if (!organization) throw notExistsWithId('organizations', organizationId);
    for (const [key, value] of Object.entries(patch)) {
      if (value === undefined) continue;
      (organization as unknown as Record<string, unknown>)[key] =
        typeof value === 'object' && value !== null ? structuredClone(value) : value;
    }
    return organization;
  }

  /** Deletes the organization with its memberships and member roles. */
  deleteOrganization(organizationId: string): OrganizationRecord {
    const organization = this.#organizations.get(organizationId);
    if (!organization) throw notFound();
    for (const userId of this.#members.get(organizationId)?.keys() ?? []) {
      this.#userOrganizations.get(userId)?.delete(organizationId);
    }
    this.#members.delete(organizationId);
    this.#sortedMemberIds.delete(organizationId);
    this.#organizations.delete(organizationId);
    return organization;
  }

  /** Insertion order. Logto has no ORDER BY here; the API can shuffle it per request. */
  listOrganizations(): readonly Readonly<OrganizationRecord>[] {
    return [...this.#organizations.values()];
  }

  // ---------------------------------------------------------------- organization roles

  createOrganizationRole(input: CreateOrganizationRoleInput, meta: RecordMeta = {}): Readonly<OrganizationRoleRecord> {
    if (this.#roleNames.has(input.name)) throw new LogtoApiError(422, 'entity.unique_integrity_violation');
    const id = meta.id ?? this.#freshId(standardIdLength, this.#roles);
    if (this.#roles.has(id)) throw new LogtoApiError(422, 'entity.unique_integrity_violation');
    const role: OrganizationRoleRecord = {
      tenantId: this.tenantId,
      id,
      name: input.name,
      description: input.description ?? null,
      type: input.type ?? 'User',
    };
    this.#roles.set(id, role);
    this.#roleNames.set(role.name, id);
    this.#rolesByName = undefined;
    return role;
  }

  getOrganizationRole(roleId: string): Readonly<OrganizationRoleRecord> | undefined {
    return this.#roles.get(roleId);
  }

  findOrganizationRoleByName(name: string): Readonly<OrganizationRoleRecord> | undefined {
    const id = this.#roleNames.get(name);
    return id === undefined ? undefined : this.#roles.get(id);
  }

  requireOrganizationRole(roleId: string): Readonly<OrganizationRoleRecord> {
    const role = this.#roles.get(roleId);
    if (!role) throw notExistsWithId('organization_roles', roleId);
    return role;
  }

  updateOrganizationRole(roleId: string, patch: UpdateOrganizationRoleInput): Readonly<OrganizationRoleRecord> {
    const role = this.#roles.get(roleId);
    if (!role) throw notExistsWithId('organization_roles', roleId);
    if (patch.name !== undefined && patch.name !== role.name) {
      if (this.#roleNames.has(patch.name)) throw new LogtoApiError(422, 'entity.unique_integrity_violation');
      this.#roleNames.delete(role.name);
      role.name = patch.name;
      this.#roleNames.set(role.name, role.id);
      this.#rolesByName = undefined;
    }
    if (patch.description !== undefined) role.description = patch.description;
    return role;
  }

  /** Deletes the role and silently takes it from every member of every organization. */
  deleteOrganizationRole(roleId: string): OrganizationRoleRecord {
    const role = this.#roles.get(roleId);
    if (!role) throw notFound();
    for (const members of this.#members.values()) {
      for (const roles of members.values()) roles.delete(roleId);
    }
    this.#roles.delete(roleId);
    this.#roleNames.delete(role.name);
    this.#rolesByName = undefined;
    return role;
  }

  /** Logto's order: `name asc`. */
  listOrganizationRoles(): readonly Readonly<OrganizationRoleRecord>[] {
    if (!this.#rolesByName) this.#rolesByName = [...this.#roles.values()].sort(byName);
    return this.#rolesByName;
  }

  // ---------------------------------------------------------------- memberships

  isMember(organizationId: string, userId: string): boolean {
    return this.#members.get(organizationId)?.has(userId) ?? false;
  }

  /** Member ids ordered by user id, as `GET /organizations/:id/users`. Unknown organization: none. */
  listMemberIds(organizationId: string): readonly string[] {
    let sorted = this.#sortedMemberIds.get(organizationId);
    if (!sorted) {
      sorted = [...(this.#members.get(organizationId)?.keys() ?? [])].sort(byId);
      this.#sortedMemberIds.set(organizationId, sorted);
    }
    return sorted;
  }

  memberCount(organizationId: string): number {
    return this.#members.get(organizationId)?.size ?? 0;
  }

  /** The organizations a user belongs to, in the order it joined them. */
  listUserOrganizationIds(userId: string): readonly string[] {
    return [...(this.#userOrganizations.get(userId) ?? [])];
  }

  #assertMembershipTargets(organizationId: string, userIds: readonly string[]) {
    if (userIds.length === 0) return;
    if (!this.#organizations.has(organizationId)) throw foreignKeyNotFound();
    if (userIds.some((userId) => !this.#users.has(userId))) throw foreignKeyNotFound();
  }

  #join(organizationId: string, userId: string) {
    this.#members.get(organizationId)?.set(userId, new Set());
    let organizations = this.#userOrganizations.get(userId);
    if (!organizations) {
      organizations = new Set();
      this.#userOrganizations.set(userId, organizations);
    }
    organizations.add(organizationId);
    this.#sortedMemberIds.delete(organizationId);
  }

  #leave(organizationId: string, userId: string) {
    this.#members.get(organizationId)?.delete(userId);
    this.#userOrganizations.get(userId)?.delete(organizationId);
    this.#sortedMemberIds.delete(organizationId);
  }

  /**
   * Adds members; existing members are left alone (`ON CONFLICT DO NOTHING`). All or nothing:
   * an unknown user or organization is 422 and changes nothing. Returns the truly new members.
   */
  addMembers(organizationId: string, userIds: readonly string[]): string[] {
    this.#assertMembershipTargets(organizationId, userIds);
    const added: string[] = [];
    for (const userId of new Set(userIds)) {
      if (this.isMember(organizationId, userId)) continue;
      this.#join(organizationId, userId);
      added.push(userId);
    }
    return added;
  }

  /**
   * Makes `userIds` the member set (Logto ≥ 1.40 `replaceWithDelta`): survivors keep their roles,
   * leavers lose theirs.
   */
  replaceMembers(organizationId: string, userIds: readonly string[]): { added: string[]; removed: string[] } {
    this.#assertMembershipTargets(organizationId, userIds);
    const next = new Set(userIds);
    const removed = [...(this.#members.get(organizationId)?.keys() ?? [])].filter((userId) => !next.has(userId));
    for (const userId of removed) this.#leave(organizationId, userId);
    const added: string[] = [];
    for (const userId of next) {
      if (this.isMember(organizationId, userId)) continue;
      this.#join(organizationId, userId);
      added.push(userId);
    }
    return { added, removed };
  }

  /** Removes a member and its roles; 404 `entity.not_found` when it is not a member. */
  removeMember(organizationId: string, userId: string): void {
    if (!this.isMember(organizationId, userId)) throw notFound();
    this.#leave(organizationId, userId);
  }

  /** Role ids of a member, in assignment order. Not a member: none. */
  getMemberRoleIds(organizationId: string, userId: string): string[] {
    return [...(this.#members.get(organizationId)?.get(userId) ?? [])];
  }

  /** The member's roles sorted by name, as in `organizationRoles` of Logto's member lists. */
  getMemberRoles(organizationId: string, userId: string): Readonly<OrganizationRoleRecord>[] {
    const roles: OrganizationRoleRecord[] = [];
    for (const roleId of this.#members.get(organizationId)?.get(userId) ?? []) {
      const role = this.#roles.get(roleId);
      if (role) roles.push(role);
    }
    return roles.sort(byName);
  }

  #assertAssignableRoles(roleIds: readonly string[]) {
    for (const roleId of roleIds) {
      const role = this.#roles.get(roleId);
      if (!role) throw foreignKeyNotFound();
      // The check constraint on organization_role_user_relations: only `User` roles go to users.
      if (role.type !== 'User') throw new LogtoApiError(422, 'entity.db_constraint_violated');
    }
  }

  #memberRoles(organizationId: string, userId: string): Set<string> {
    const roles = this.#members.get(organizationId)?.get(userId);
    if (!roles) throw requireMembership();
    return roles;
  }

  /** Adds roles to a member; already held roles are ignored. */
  addMemberRoles(organizationId: string, userId: string, roleIds: readonly string[]): void {
    const roles = this.#memberRoles(organizationId, userId);
    this.#assertAssignableRoles(roleIds);
    for (const roleId of roleIds) roles.add(roleId);
  }

  /** Replaces a member's roles. */
  setMemberRoles(organizationId: string, userId: string, roleIds: readonly string[]): void {
    const roles = this.#memberRoles(organizationId, userId);
    this.#assertAssignableRoles(roleIds);
    roles.clear();
    for (const roleId of roleIds) roles.add(roleId);
  }

  /** Takes one role from a member; 404 `entity.not_found` when it does not hold it. */
  removeMemberRole(organizationId: string, userId: string, roleId: string): void {
    const roles = this.#memberRoles(organizationId, userId);
    if (!roles.delete(roleId)) throw notFound();
  }

  /**
   * Gives every listed user every listed role (`POST /organizations/:id/users/roles`). A non-member
   * or an unknown role breaks a foreign key, so it is 422 and nothing changes.
   */
  addRolesToMembers(organizationId: string, userIds: readonly string[], roleIds: readonly string[]): void {
    if (userIds.some((userId) => !this.isMember(organizationId, userId))) throw foreignKeyNotFound();
    this.#assertAssignableRoles(roleIds);
    for (const userId of userIds) {
      const roles = this.#members.get(organizationId)?.get(userId);
      for (const roleId of roleIds) roles?.add(roleId);
    }
  }

  // ---------------------------------------------------------------- whole tenant

  counts(): TenantCounts {
    let memberships = 0;
    let memberRoles = 0;
    for (const members of this.#members.values()) {
      memberships += members.size;
      for (const roles of members.values()) memberRoles += roles.size;
    }
    return {
      users: this.#users.size,
      organizations: this.#organizations.size,
      organizationRoles: this.#roles.size,
      memberships,
      memberRoles,
    };
  }

  snapshot(): TenantSnapshot {
    const memberships: Record<string, Record<string, string[]>> = {};
    for (const organizationId of [...this.#members.keys()].sort(byId)) {
      const members: Record<string, string[]> = {};
      for (const userId of this.listMemberIds(organizationId)) {
        members[userId] = this.getMemberRoleIds(organizationId, userId).sort(byId);
      }
      memberships[organizationId] = members;
    }
    return {
      users: [...this.#users.values()].map(toUserResponse),
      organizations: [...this.#organizations.values()].map(toOrganizationResponse),
      organizationRoles: [...this.#roles.values()].map(toOrganizationRoleResponse),
      memberships,
    };
  }

  #freshId(length: number, taken: Map<string, unknown>): string {
    for (;;) {
      const id = generateId(length);
      if (!taken.has(id)) return id;
    }
  }
}
