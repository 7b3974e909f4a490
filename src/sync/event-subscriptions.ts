import { randomBytes } from 'node:crypto';
import type { Database } from '../db/client.js';
import { kindsOfEventTypes, type AccessEventType } from '../db/access-events.js';
import {
  insertEventSubscription,
  rotateEventSubscriptionSecret,
  updateEventSubscription,
  type EventSubscription,
} from '../db/event-subscriptions.js';
import { AppError } from '../errors.js';
import { checkSubscriberUrl } from './public-address.js';

/** How long a rotated-out secret keeps signing beside the new one. */
export const previousSecretLifetimeMs = 24 * 60 * 60 * 1000;

/** A Standard Webhooks secret: `whsec_` and 24 random bytes in base64. */
export const newSigningSecret = (): string => `whsec_${randomBytes(24).toString('base64')}`;

const newSubscriptionId = (): string => `sub_${randomBytes(12).toString('base64url')}`;

const refuseUrl = async (url: string, allowPrivate: boolean): Promise<void> => {
  const check = await checkSubscriberUrl(url, allowPrivate);
  if (!check.ok) {
    throw new AppError(400, 'invalid_params', `Invalid parameter: url ${check.reason}`, { invalid_params: [{ name: 'url', reason: check.reason }] });
  }
};

const typesAndKinds = (eventTypes: AccessEventType[] | null | undefined) =>
  eventTypes ? { eventTypes: [...new Set(eventTypes)], kinds: kindsOfEventTypes([...new Set(eventTypes)]) } : { eventTypes: null, kinds: null };

export type EventSubscriptionInput = { url: string; eventTypes?: AccessEventType[] | undefined; description?: string | undefined };

export const createEventSubscription = async (
  db: Database,
  input: EventSubscriptionInput,
  options: { allowPrivateUrls: boolean },
): Promise<EventSubscription> => {
  await refuseUrl(input.url, options.allowPrivateUrls);
  return insertEventSubscription(db, {
    id: newSubscriptionId(),
    url: input.url,
    description: input.description ?? null,
    ...typesAndKinds(input.eventTypes),
    secret: newSigningSecret(),
  });
};

export type EventSubscriptionChange = {
  url?: string | undefined;
  eventTypes?: AccessEventType[] | null | undefined;
  description?: string | null | undefined;
  enabled?: boolean | undefined;
};

export const changeEventSubscription = async (
  db: Database,
  id: string,
  change: EventSubscriptionChange,
  options: { allowPrivateUrls: boolean },
): Promise<EventSubscription | null> => {
  if (change.url !== undefined) await refuseUrl(change.url, options.allowPrivateUrls);
  return updateEventSubscription(db, id, {
    ...(change.url !== undefined ? { url: change.url } : {}),
    ...(change.eventTypes !== undefined ? typesAndKinds(change.eventTypes) : {}),
    ...(change.description !== undefined ? { description: change.description } : {}),
    ...(change.enabled !== undefined ? { enabled: change.enabled } : {}),
  });
};

export const rotateSigningSecret = (db: Database, id: string, now = new Date()): Promise<EventSubscription | null> =>
  rotateEventSubscriptionSecret(db, id, newSigningSecret(), new Date(now.getTime() + previousSecretLifetimeMs));
