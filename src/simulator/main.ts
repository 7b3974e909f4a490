import { parseArgs } from 'node:util';
import { z } from 'zod';
import { createLogger } from '../logger.js';
import { generateId, mulberry32, standardIdLength } from './ids.js';
import { startSimulatedTenant } from './server.js';

/**
 * `npm run simulator`: a simulated Logto tenant filled with generated data, for the demo and for
 * trying the service by hand. Flags win over environment variables.
 *
 *   --port 3001 --users 10000 --organizations 500 --roles 6 --seed 1
 *   --webhook-url http://127.0.0.1:3000/webhooks/logto --signing-key <key>
 *   --tenant-id default --client-id sim-m2m-app --client-secret sim-secret --resource self
 *   --latency-ms 20 --largest-share 0.3 --member-role-weights 0.25,0.5,0.18,0.07   (tenant shape and speed for benches)
 *
 * Environment: SIM_PORT, SIM_USERS, SIM_ORGANIZATIONS, SIM_ROLES, SIM_SEED, SIM_WEBHOOK_URL,
 * SIM_SIGNING_KEY, SIM_TENANT_ID, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_RESOURCE.
 */

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    users: { type: 'string' },
    organizations: { type: 'string' },
    roles: { type: 'string' },
    seed: { type: 'string' },
    'webhook-url': { type: 'string' },
    'signing-key': { type: 'string' },
    'tenant-id': { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    resource: { type: 'string' },
    'latency-ms': { type: 'string' },
    'largest-share': { type: 'string' },
    'member-role-weights': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

if (values.help) {
  process.stdout.write(
    'Usage: npm run simulator -- [--port N] [--users N] [--organizations N] [--roles N] [--seed N]\n' +
      '       [--webhook-url URL] [--signing-key KEY] [--tenant-id ID] [--client-id ID] [--client-secret S] [--resource URL|self]\n' +
      '       [--latency-ms N] [--largest-share 0.3] [--member-role-weights 0.25,0.5,0.18,0.07]\n',
  );
  process.exit(0);
}

const count = (fallback: number) => z.coerce.number().int().min(0).default(fallback);
const settingsSchema = z.object({
  port: z.coerce.number().int().min(0).max(65_535).default(3001),
  users: count(2000),
  organizations: count(100),
  roles: count(6),
  seed: z.coerce.number().int().default(1),
  webhookUrl: z.url().optional(),
  signingKey: z.string().min(1).optional(),
  tenantId: z.string().min(1).default('default'),
  clientId: z.string().min(1).default('sim-m2m-app'),
  clientSecret: z.string().min(1).default('sim-secret'),
  resource: z.string().min(1).optional(),
  latencyMs: z.coerce.number().min(0).default(0),
  largestShare: z.coerce.number().min(0).max(0.5).optional(),
  memberRoleWeights: z
    .string()
    .regex(/^\d+(\.\d+)?(,\d+(\.\d+)?){3}$/, 'must be four numbers such as 0.25,0.5,0.18,0.07')
    .transform((value) => value.split(',').map(Number) as [number, number, number, number])
    .optional(),
});

const parsed = settingsSchema.safeParse({
  port: values.port ?? process.env.SIM_PORT,
  users: values.users ?? process.env.SIM_USERS,
  organizations: values.organizations ?? process.env.SIM_ORGANIZATIONS,
  roles: values.roles ?? process.env.SIM_ROLES,
  seed: values.seed ?? process.env.SIM_SEED,
  webhookUrl: values['webhook-url'] ?? process.env.SIM_WEBHOOK_URL,
  signingKey: values['signing-key'] ?? process.env.SIM_SIGNING_KEY,
  tenantId: values['tenant-id'] ?? process.env.SIM_TENANT_ID,
  clientId: values['client-id'] ?? process.env.SIM_CLIENT_ID,
  clientSecret: values['client-secret'] ?? process.env.SIM_CLIENT_SECRET,
  resource: values.resource ?? process.env.SIM_RESOURCE,
  latencyMs: values['latency-ms'],
  largestShare: values['largest-share'],
  memberRoleWeights: values['member-role-weights'],
});
if (!parsed.success) {
  const problems = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`).join('\n');
  process.stderr.write(`Invalid simulator settings:\n${problems}\n`);
  process.exit(1);
}
const settings = parsed.data;
const logger = createLogger();
// A restart with the same seed keeps the same hook id and signing key, so the service's settings
// stay valid across restarts of the demo. These are loopback test credentials, not secrets.
const credentials = mulberry32(settings.seed ^ 0x5eed);
const hookId = generateId(standardIdLength, credentials);
const signingKey = settings.signingKey ?? generateId(32, credentials);

const tenant = await startSimulatedTenant({
  port: settings.port,
  tenantId: settings.tenantId,
  clientId: settings.clientId,
  clientSecret: settings.clientSecret,
  seed: settings.seed,
  hookId,
  signingKey,
  logger,
  generate: {
    users: settings.users,
    organizations: settings.organizations,
    organizationRoles: settings.roles,
    ...(settings.largestShare === undefined ? {} : { largestOrganizationShare: settings.largestShare }),
    ...(settings.memberRoleWeights === undefined ? {} : { memberRoleWeights: settings.memberRoleWeights }),
  },
  latencyMs: settings.latencyMs,
  ...(settings.resource === undefined ? {} : { resource: settings.resource }),
  ...(settings.webhookUrl === undefined ? {} : { webhookEndpoints: [{ url: settings.webhookUrl }] }),
});

const counts = tenant.state.counts();
// These are the simulator's own throwaway credentials: printing them is the point of this command.
process.stdout.write(
  [
    `Simulated Logto tenant "${tenant.tenantId}" listening on ${tenant.baseUrl}`,
    `  ${counts.users} users, ${counts.organizations} organizations, ${counts.organizationRoles} organization roles, ` +
      `${counts.memberships} memberships, ${counts.memberRoles} member roles (seed ${settings.seed})`,
    settings.webhookUrl ? `  webhooks → ${settings.webhookUrl}` : '  webhooks: none (pass --webhook-url)',
    '',
    'Connection settings for logto-access-sync:',
    `LOGTO_BASE_URL=${tenant.baseUrl}`,
    `LOGTO_TOKEN_URL=${tenant.tokenUrl}`,
    `LOGTO_MANAGEMENT_API_RESOURCE=${tenant.resource}`,
    `LOGTO_CLIENT_ID=${tenant.clientId}`,
    `LOGTO_CLIENT_SECRET=${tenant.clientSecret}`,
    `LOGTO_HOOK_ID=${tenant.hookId}`,
    `LOGTO_WEBHOOK_SIGNING_KEYS=${tenant.signingKey}`,
    '',
  ].join('\n'),
);

const shutdown = async (signal: string) => {
  logger.info({ signal }, 'stopping the simulated tenant');
  await tenant.close();
  process.exit(0);
};
process.once('SIGINT', () => void shutdown('SIGINT'));
process.once('SIGTERM', () => void shutdown('SIGTERM'));
