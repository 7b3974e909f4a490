/**
 * The entities a Logto tenant holds, as the simulator stores them, and the exact response shapes
 * Logto answers with. Key order matters: the serializers below build objects in the order seen in
 * the recorded responses (`test/fixtures/logto/management-api/*.json`), so a raw body from the
 * simulator lines up with a raw body from Logto.
 */

export type JsonObject = Record<string, unknown>;

export interface UserRecord {
  id: string;
  username: string | null;
  primaryEmail: string | null;
  primaryPhone: string | null;
  name: string | null;
  avatar: string | null;
  customData: JsonObject;
  identities: JsonObject;
  lastSignInAt: number | null;
  createdAt: number;
  updatedAt: number;
  profile: JsonObject;
  applicationId: string | null;
  cimdClientId: string | null;
  isSuspended: boolean;
  /** Logto keeps a password hash; the simulator only remembers whether there is one. */
  hasPassword: boolean;
}

export interface OrganizationRecord {
  tenantId: string;
  id: string;
  name: string;
  description: string | null;
  customData: JsonObject;
  isMfaRequired: boolean;
  color: JsonObject;
  branding: JsonObject;
  customCss: string | null;
  createdAt: number;
}

export type OrganizationRoleType = 'User' | 'MachineToMachine';

export interface OrganizationRoleRecord {
  tenantId: string;
  id: string;
  name: string;
  description: string | null;
  type: OrganizationRoleType;
}

/** `userInfoSelectFields`: a user without `hasPassword` (organization members, User.Deleted, interaction events). */
export type UserInfo = Omit<UserRecord, 'hasPassword'>;
/** The admin profile response of `/users` routes: user info plus `hasPassword`. */
export type UserResponse = UserRecord;
export type OrganizationResponse = OrganizationRecord;
export type OrganizationRoleResponse = OrganizationRoleRecord;
export interface RoleReference {
  id: string;
  name: string;
}
export type OrganizationRoleWithScopesResponse = OrganizationRoleRecord & {
  scopes: Array<{ id: string; name: string }>;
  resourceScopes: Array<{ id: string; name: string; resource: { id: string; name: string } }>;
};
export type OrganizationMemberResponse = UserInfo & { organizationRoles: RoleReference[] };
export type UserOrganizationResponse = OrganizationRecord & { organizationRoles: RoleReference[] };

// Responses and webhook payloads must not alias the live state: a payload is serialised when it is
// sent, after later requests may have changed the entity.
const clone = <T>(value: T): T => structuredClone(value);

export const toUserInfo = (user: UserRecord): UserInfo => ({
  id: user.id,
  username: user.username,
  primaryEmail: user.primaryEmail,
  primaryPhone: user.primaryPhone,
  name: user.name,
  avatar: user.avatar,
  customData: clone(user.customData),
  identities: clone(user.identities),
  lastSignInAt: user.lastSignInAt,
  createdAt: user.createdAt,
  updatedAt: user.updatedAt,
  profile: clone(user.profile),
  applicationId: user.applicationId,
  cimdClientId: user.cimdClientId,
  isSuspended: user.isSuspended,
});

export const toUserResponse = (user: UserRecord): UserResponse => ({
  ...toUserInfo(user),
  hasPassword: user.hasPassword,
});

export const toOrganizationResponse = (organization: OrganizationRecord): OrganizationResponse => ({
  tenantId: organization.tenantId,
  id: organization.id,
  name: organization.name,
  description: organization.description,
  customData: clone(organization.customData),
  isMfaRequired: organization.isMfaRequired,
  color: clone(organization.color),
  branding: clone(organization.branding),
  customCss: organization.customCss,
  createdAt: organization.createdAt,
});

export const toOrganizationRoleResponse = (role: OrganizationRoleRecord): OrganizationRoleResponse => ({
  tenantId: role.tenantId,
  id: role.id,
  name: role.name,
  description: role.description,
  type: role.type,
});

/** The simulator has no organization scopes, so these lists are always empty, as for a tenant that defines none. */
export const toOrganizationRoleWithScopes = (role: OrganizationRoleRecord): OrganizationRoleWithScopesResponse => ({
  ...toOrganizationRoleResponse(role),
  scopes: [],
  resourceScopes: [],
});

export const toRoleReference = (role: OrganizationRoleRecord): RoleReference => ({ id: role.id, name: role.name });
