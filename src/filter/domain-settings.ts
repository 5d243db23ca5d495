// Per-domain overrides of the [filter] defaults, set with `popgate domain set`: a provider
// hosts schools that want DMARC enforced and customers' family domains that would rather have
// everything marked. Stored beside the accounts (SQLite, or PostgreSQL in a cluster).

/** The settings a domain may override, and the values each takes. */
export const DOMAIN_SETTINGS = {
  dmarc: ['enforce', 'mark', 'off'],
  spf_fail: ['reject', 'mark', 'off'],
  temporary_errors: ['accept', 'defer'],
  greylisting: ['true', 'false'],
  // Whether the domain's users must write their own address in From: (src/policy/mail-policy.ts);
  // "off" for a forwarding service whose users resend mail under its original From:.
  from_check: ['enforce', 'off'],
} as const satisfies Record<string, readonly string[]>;

export type DomainSettingName = keyof typeof DOMAIN_SETTINGS;
export type DomainSettings = { [K in DomainSettingName]?: (typeof DOMAIN_SETTINGS)[K][number] };

export interface DomainSettingsStore {
  /** The overrides of one domain (lower-case A-labels); {} when it has none. */
  get(domain: string): Promise<DomainSettings>;
  /** Sets one override, or removes it (`undefined`). */
  set(domain: string, name: DomainSettingName, value: string | undefined): Promise<void>;
  /** Every override, by domain and name. */
  list(): Promise<{ domain: string; name: DomainSettingName; value: string }[]>;
}

/** Why a `name=value` cannot be set, or undefined when it can. */
export function settingProblem(name: string, value: string): string | undefined {
  if (!Object.hasOwn(DOMAIN_SETTINGS, name)) return `unknown setting "${name}": one of ${Object.keys(DOMAIN_SETTINGS).join(', ')}`;
  const allowed: readonly string[] = DOMAIN_SETTINGS[name as DomainSettingName];
  if (value !== '' && !allowed.includes(value)) return `${name} must be one of ${allowed.join(', ')} (or empty to use the server's default)`;
  return undefined;
}

/** Keeps only known settings with allowed values (a store read back what another version wrote). */
export function validSettings(rows: { name: string; value: string }[]): DomainSettings {
  const settings: Record<string, string> = {};
  for (const { name, value } of rows) if (value !== '' && settingProblem(name, value) === undefined) settings[name] = value;
  return settings as DomainSettings;
}
