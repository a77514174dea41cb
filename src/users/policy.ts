// A user's policy, as the users file keeps it: when the account expires, how much data it may move per
// period, and how fast each way. Parsed and written here; enforced by the authenticator (expiry and quota
// at login), the engine (expiry and rate while connected) and the primary's accounting (quota).
//
//   "alice": { ..., "expires": "2027-01-01T00:00:00.000Z", "quotaBytes": 50000000000,
//              "quotaPeriod": "month", "rateBitsPerSecond": 20000000 }
//
// Periods are calendar days and months in UTC: a server's clock and its log are in UTC, and an operator
// reads "50 GB a month" as "from the first of the month".

export type QuotaPeriod = 'day' | 'month';

export interface UserPolicy {
  /** ISO 8601: from this time on the user cannot log in, and a running session ends. */
  readonly expires?: string | undefined;
  /** Bytes both ways together per quotaPeriod (the tunnel's bytes on the wire, framing included). */
  readonly quotaBytes?: number | undefined;
  readonly quotaPeriod?: QuotaPeriod | undefined;
  /** Shaping rate in bits per second, each way. */
  readonly rateBitsPerSecond?: number | undefined;
}

export const NO_POLICY: UserPolicy = Object.freeze({});

/** Whether the user's account has expired at `nowMs`. */
export function isExpired(policy: UserPolicy, nowMs: number): boolean {
  return policy.expires !== undefined && Date.parse(policy.expires) <= nowMs;
}

/** The shaping rate in bytes per second, or 0 for none. */
export function rateBytesPerSecond(policy: UserPolicy): number {
  return policy.rateBitsPerSecond === undefined ? 0 : policy.rateBitsPerSecond / 8;
}

/** The UTC day ("2026-11-29") a time falls on: the key of the accounting's daily records. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The first day of the quota period `ms` falls in ("2026-11-01" for a month). */
export function periodStart(period: QuotaPeriod, ms: number): string {
  const day = dayOf(ms);
  return period === 'day' ? day : `${day.slice(0, 8)}01`;
}

/** When the period that holds `ms` ends (ISO 8601): when a user over quota may log in again. */
export function periodEnd(period: QuotaPeriod, ms: number): string {
  const date = new Date(ms);
  const end =
    period === 'day'
      ? Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate() + 1)
      : Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
  return new Date(end).toISOString();
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** "500MB", "50GB", "1.5GiB", "1000" (bytes) → bytes; null when it is not a size. */
export function parseSize(text: string): number | null {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?$/i.exec(text.trim());
  if (match === null) return null;
  const bytes = Math.round(Number(match[1]) * (SIZE_UNITS[(match[2] ?? 'b').toLowerCase()] as number));
  return bytes > 0 && Number.isSafeInteger(bytes) ? bytes : null;
}

const RATE_UNITS: Readonly<Record<string, number>> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };

/** "20mbit", "512kbit", "1gbit" (also with "/s" or "ps") → bits per second; null when it is not a rate. */
export function parseRate(text: string): number | null {
  const match = /^(\d+(?:\.\d+)?)\s*([kmg]?bit)(?:\/s|ps)?$/i.exec(text.trim());
  if (match === null) return null;
  const bits = Math.round(Number(match[1]) * (RATE_UNITS[(match[2] as string).toLowerCase()] as number));
  // Below 8 kbit/s a single full-size packet waits over a second: no tunnel works at that rate.
  return bits >= 8000 && Number.isSafeInteger(bits) ? bits : null;
}

/** "2026-12-31" or a full ISO 8601 time → the ISO string stored; null when it is not a time. */
export function parseExpiry(text: string): string | null {
  if (!/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(text.trim())) return null;
  const ms = Date.parse(text.trim());
  return Number.isNaN(ms) ? null : new Date(ms).toISOString();
}

/** 1234567 → "1.2 MB" (decimal units, as quotas are given). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

/** 20000000 → "20 Mbit/s". */
export function formatRate(bits: number): string {
  if (bits >= 1e9) return `${+(bits / 1e9).toFixed(2)} Gbit/s`;
  if (bits >= 1e6) return `${+(bits / 1e6).toFixed(2)} Mbit/s`;
  return `${+(bits / 1e3).toFixed(2)} kbit/s`;
}

/**
 * The policy fields of a users-file record, checked; `invalid(what)` builds the error for a bad one.
 * Absent fields are absent; a quota needs its period.
 */
export function parsePolicy(entry: Record<string, unknown>, invalid: (what: string) => Error): UserPolicy {
  const { expires, quotaBytes, quotaPeriod, rateBitsPerSecond } = entry;
  const policy: { -readonly [K in keyof UserPolicy]: UserPolicy[K] } = {};
  if (expires !== undefined) {
    if (typeof expires !== 'string' || Number.isNaN(Date.parse(expires)))
      throw invalid('"expires" must be an ISO 8601 time');
    policy.expires = expires;
  }
  if (quotaBytes !== undefined) {
    if (typeof quotaBytes !== 'number' || !Number.isSafeInteger(quotaBytes) || quotaBytes <= 0)
      throw invalid('"quotaBytes" must be a positive whole number of bytes');
    if (quotaPeriod !== 'day' && quotaPeriod !== 'month')
      throw invalid('"quotaPeriod" must be "day" or "month" when there is a quotaBytes');
    policy.quotaBytes = quotaBytes;
    policy.quotaPeriod = quotaPeriod;
  }
  if (rateBitsPerSecond !== undefined) {
    if (
      typeof rateBitsPerSecond !== 'number' ||
      !Number.isSafeInteger(rateBitsPerSecond) ||
      rateBitsPerSecond < 8000
    )
      throw invalid('"rateBitsPerSecond" must be a whole number of at least 8000');
    policy.rateBitsPerSecond = rateBitsPerSecond;
  }
  return Object.freeze(policy);
}

/** The policy's fields for the users file (only those set). */
export function serializePolicy(policy: UserPolicy): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  if (policy.expires !== undefined) out.expires = policy.expires;
  if (policy.quotaBytes !== undefined && policy.quotaPeriod !== undefined) {
    out.quotaBytes = policy.quotaBytes;
    out.quotaPeriod = policy.quotaPeriod;
  }
  if (policy.rateBitsPerSecond !== undefined) out.rateBitsPerSecond = policy.rateBitsPerSecond;
  return out;
}
