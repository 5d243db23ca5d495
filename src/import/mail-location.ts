import { join } from 'node:path';

// Where a Dovecot user's INBOX is: Dovecot's mail_location (doc: MailLocation), e.g.
// "maildir:/var/vmail/%d/%n" or "maildir:~/Maildir", with the user variables %u / %{user}
// (user@domain), %n / %{username} (before "@"), %d / %{domain} (after "@"), %h / %{home}, the
// case modifiers %L and %U ("%Ld"), and ":KEY=VALUE" parts after the path, of which INBOX= (the
// INBOX elsewhere) and CONTROL= (where dovecot-uidlist is) matter here. POP3 serves INBOX only,
// so other folders are not looked at.

export class MailLocationError extends Error {}

export interface UserMaildir {
  /** The INBOX Maildir (with cur/ and new/). */
  inbox: string;
  /** The folder holding dovecot-uidlist. */
  control: string;
}

export class MailLocation {
  readonly #template: string;
  readonly #inbox?: string;
  readonly #control?: string;

  constructor(location: string) {
    const match = /^(\w+):(.*)$/.exec(location);
    if (!match) throw new MailLocationError(`"${location}" is not a mail location (for example maildir:/var/vmail/%d/%n)`);
    if (match[1] !== 'maildir') throw new MailLocationError(`"${location}": only maildir: locations can be imported (${match[1]} is another format: convert it with doveadm sync to Maildir first)`);
    const [path, ...options] = match[2].split(':');
    if (path === '') throw new MailLocationError(`"${location}" has no path`);
    this.#template = path;
    for (const option of options) {
      const [key, value] = [option.slice(0, option.indexOf('=')), option.slice(option.indexOf('=') + 1)];
      if (key === 'INBOX') this.#inbox = value;
      else if (key === 'CONTROL') this.#control = value;
    }
  }

  /** The Maildir of `user` (user@domain), whose passwd-file home is `home`. */
  resolve(user: string, home: string): UserMaildir {
    const root = expand(this.#template, user, home);
    const inbox = this.#inbox ? expand(this.#inbox, user, home) : root;
    return { inbox, control: this.#control ? expand(this.#control, user, home) : inbox };
  }
}

/** The Maildir of `user` under a folder of <domain>/<user>/ Maildirs (--maildirs). */
export function maildirUnder(root: string, user: string): UserMaildir {
  const at = user.lastIndexOf('@');
  const inbox = join(root, user.slice(at + 1), user.slice(0, at));
  return { inbox, control: inbox };
}

function expand(template: string, user: string, home: string): string {
  const at = user.lastIndexOf('@');
  const values: Record<string, string> = {
    u: user,
    user,
    n: at === -1 ? user : user.slice(0, at),
    username: at === -1 ? user : user.slice(0, at),
    d: at === -1 ? '' : user.slice(at + 1),
    domain: at === -1 ? '' : user.slice(at + 1),
    h: home,
    home,
  };
  const withHome = template.startsWith('~/') ? join(requireHome(home, user), template.slice(2)) : template;
  return withHome.replace(/%([LU]*)(?:\{(\w+)\}|(.))/g, (whole, modifiers: string, long: string | undefined, short: string | undefined) => {
    if (short === '%') return '%';
    const key = long ?? short!;
    let value = values[key];
    if (value === undefined) throw new MailLocationError(`the mail location uses ${whole}, which is not one of %u, %n, %d, %h`);
    if ((key === 'h' || key === 'home') && value === '') value = requireHome(home, user);
    for (const modifier of modifiers) value = modifier === 'L' ? value.toLowerCase() : value.toUpperCase();
    if (value.includes('/') && key !== 'h' && key !== 'home') throw new MailLocationError(`the user name ${user} would put a "/" into its Maildir path`);
    return value;
  });
}

function requireHome(home: string, user: string): string {
  if (home === '') throw new MailLocationError(`the mail location uses the home folder, but ${user} has none in the passwd-file`);
  return home;
}
