import { parseAddress } from '../accounts/address.ts';
import type { AccountStore } from '../accounts/store.ts';
import type { ForwardingStore } from './store.ts';

// The checks a forwarding rule passes before it is stored (`popgate user forward`, and the
// customer's own page later): real addresses, not too many, not the user's own address, and
// no circle through other local users' rules and aliases. Circles through other providers
// cannot be seen here; those are caught on the mail itself (Delivered-To:, forwarding.ts).

/** More targets than this is a mailing list, which a forwarding rule is not. */
export const MAX_FORWARD_TARGETS = 10;
/** How deep local rules and aliases are followed when looking for a circle. */
const MAX_DEPTH = 10;

export async function forwardingProblem(
  user: string,
  inputs: readonly string[],
  stores: { accounts: AccountStore; forwarding: ForwardingStore },
): Promise<{ ok: true; targets: string[] } | { ok: false; reason: string }> {
  if (inputs.length === 0) return { ok: false, reason: 'give at least one address to forward to' };
  if (inputs.length > MAX_FORWARD_TARGETS) return { ok: false, reason: `at most ${MAX_FORWARD_TARGETS} addresses (${inputs.length} given)` };
  const targets: string[] = [];
  for (const input of inputs) {
    const parsed = parseAddress(input);
    if (!parsed) return { ok: false, reason: `"${input}" is not a valid address (for example alice@example.net)` };
    if (parsed.address === user) return { ok: false, reason: `${user} cannot forward to itself (use --keep to keep a copy)` };
    if (!targets.includes(parsed.address)) targets.push(parsed.address);
  }
  for (const target of targets) {
    const domain = target.slice(target.lastIndexOf('@') + 1);
    if (!(await stores.accounts.isLocalDomain(domain))) continue;
    if (!(await stores.accounts.lookup(target))) return { ok: false, reason: `${target} is in a local domain but is no user or alias there` };
    const path = await leadsBack(target, user, stores, [target], 0);
    if (path) return { ok: false, reason: `forwarding in a circle: ${[user, ...path].join(' → ')}` };
  }
  return { ok: true, targets };
}

/** The chain of local addresses from `address` back to `user`, if there is one. */
async function leadsBack(address: string, user: string, stores: { accounts: AccountStore; forwarding: ForwardingStore }, path: string[], depth: number): Promise<string[] | undefined> {
  if (depth >= MAX_DEPTH) return undefined;
  const found = await stores.accounts.lookup(address);
  const next = found?.kind === 'alias' ? found.targets : found?.kind === 'user' ? ((await stores.forwarding.get(address))?.targets ?? []) : [];
  for (const target of next) {
    if (target === user) return [...path, user];
    if (path.includes(target)) continue;
    const back = await leadsBack(target, user, stores, [...path, target], depth + 1);
    if (back) return back;
  }
  return undefined;
}
