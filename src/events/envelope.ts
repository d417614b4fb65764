import { z } from 'zod';
import { v7 as uuidv7 } from 'uuid';
import { compileCheck } from './check.js';
import { eventSchemas, SCHEMA_VERSION, type EventData, type EventType } from './types.js';

export const Actor = z.object({
  kind: z.enum(['user', 'smtp', 'system', 'relay']),
  id: z.string().nullable(),
});
export type Actor = z.infer<typeof Actor>;

export const Meta = z.object({
  correlationId: z.string(),
  causationId: z.string().nullable(),
  actor: Actor,
});
export type Meta = z.infer<typeof Meta>;

/** An event as a command produces it, before the store gives it a place in the log. */
export type NewEvent = { [T in EventType]: { type: T; data: EventData<T> } }[EventType];

/** An event as it is in the log. */
export type StoredEvent = {
  [T in EventType]: {
    eventId: string;
    streamId: string;
    /** 1-based position within its stream. */
    version: number;
    /** 1-based position in the one global log; identical for every reader. */
    position: number;
    type: T;
    schemaVersion: number;
    data: EventData<T>;
    meta: Meta;
    /** ISO 8601, set by the store when the event is appended. */
    recordedAt: string;
  };
}[EventType];

export type EventOf<T extends EventType> = Extract<StoredEvent, { type: T }>;

export class MalformedEventError extends Error {
  constructor(
    readonly position: number | null,
    readonly detail: string,
  ) {
    super(`malformed event${position === null ? '' : ` at position ${position}`}: ${detail}`);
    this.name = 'MalformedEventError';
  }
}

function isEventType(type: string): type is EventType {
  return Object.hasOwn(eventSchemas, type);
}

const dataChecks = new Map(Object.entries(eventSchemas).map(([type, schema]) => [type, compileCheck(schema)]));
const metaCheck = compileCheck(Meta);

/** Event types whose stored data is checked in place; the others go through zod on every read. */
export const typesCheckedInPlace: string[] = [...dataChecks].filter(([, check]) => check !== null).map(([type]) => type);

/**
 * Validates an event's data against its type's schema. Unknown types and bad data throw. Data that
 * passes the compiled check is returned as it is; anything else goes through zod, which copies
 * what it accepts (stripping unknown keys) and explains what it refuses.
 */
export function validateData(type: string, data: unknown, position: number | null = null): NewEvent {
  if (!isEventType(type)) throw new MalformedEventError(position, `unknown event type "${type}"`);
  if (dataChecks.get(type)?.(data)) return { type, data } as NewEvent;
  const parsed = eventSchemas[type].safeParse(data);
  if (!parsed.success) {
    throw new MalformedEventError(position, `${type}: ${z.prettifyError(parsed.error)}`);
  }
  return { type, data: parsed.data } as NewEvent;
}

export function validateMeta(meta: unknown, position: number | null = null): Meta {
  if (metaCheck?.(meta)) return meta as Meta;
  const parsed = Meta.safeParse(meta);
  if (!parsed.success) throw new MalformedEventError(position, `meta: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** An event as an adapter reads it, before validation. */
export interface RawEvent {
  eventId: string;
  streamId: string;
  version: number;
  position: number;
  type: string;
  schemaVersion: number;
  data: unknown;
  meta: unknown;
  recordedAt: string;
}

/**
 * Turns what an adapter read into a typed event; every adapter goes through here, with a `row` it
 * built for this call, which becomes the event. Data and meta that pass their compiled check are
 * kept as read; anything else goes through zod, which copies what it accepts and explains what it
 * refuses.
 */
export function decodeStored(row: RawEvent): StoredEvent {
  if (row.schemaVersion !== SCHEMA_VERSION) {
    throw new MalformedEventError(row.position, `${row.type} has schema version ${row.schemaVersion}, this build reads ${SCHEMA_VERSION}`);
  }
  row.data = validateData(row.type, row.data, row.position).data;
  row.meta = validateMeta(row.meta, row.position);
  return row as StoredEvent;
}

export const newEventId = (): string => uuidv7();

export function systemMeta(correlationId: string = uuidv7()): Meta {
  return { correlationId, causationId: null, actor: { kind: 'system', id: null } };
}
