import type { Command } from 'commander';
import type { Config } from '../config/schema.ts';
import type { Backends } from '../server/app.ts';
import { readPassword } from './password.ts';

// `popgate admin`: the administrators of the console (/admin on the web listeners). Each
// change is recorded in the audit log as the CLI's; the password never is.

type WithBackends = <T>(fn: (backends: Backends, config: Config) => Promise<T>) => Promise<T>;
type PasswordFlags = { passwordStdin?: boolean; password?: string };

/** Where the console is served, for the message after a change: the first HTTPS listener, else HTTP. */
function consoleUrl(config: Config): string {
  const [scheme, listen] = config.https.listen.length > 0 ? ['https', config.https.listen[0]] : ['http', config.http.listen[0]];
  if (listen === undefined) return 'the console at /admin once [http] or [https] listen is set';
  const host = listen.replace(/^(0\.0\.0\.0|\[::\]):/, `${config.hostname}:`);
  return `${scheme}://${host}/admin (from a network in [admin] networks)`;
}

export function registerAdminCommands(program: Command, withBackends: WithBackends, passwordOptions: (command: Command) => Command): void {
  const admin = program.command('admin').description('administrators of the web console (/admin)');
  const password = (options: PasswordFlags, name: string) =>
    options.password !== undefined ? Promise.resolve(options.password) : readPassword({ stdin: options.passwordStdin, prompt: `Password for administrator ${name}: `, confirm: true });

  passwordOptions(admin.command('add <name>').description('add an administrator (asks for the password)')).action((name: string, options: PasswordFlags) =>
    withBackends(async ({ admins, audit }, config) => {
      await admins.add(name, await password(options, name));
      await audit.record({ at: Date.now(), actor: 'cli', ip: '', action: 'admin.add', subject: name, detail: `added administrator ${name}` });
      console.log(`added administrator ${name}; log in at ${consoleUrl(config)}`);
    }),
  );
  passwordOptions(admin.command('passwd <name>').description('set a new password (ends the administrator\'s sessions)')).action((name: string, options: PasswordFlags) =>
    withBackends(async ({ admins, audit }) => {
      await admins.setPassword(name, await password(options, name));
      await audit.record({ at: Date.now(), actor: 'cli', ip: '', action: 'admin.passwd', subject: name, detail: `password changed for administrator ${name}` });
      console.log(`password changed for administrator ${name}; their open sessions were ended`);
    }),
  );
  admin.command('remove <name>').description('remove an administrator and end their sessions').action((name: string) =>
    withBackends(async ({ admins, audit }) => {
      await admins.remove(name);
      await audit.record({ at: Date.now(), actor: 'cli', ip: '', action: 'admin.remove', subject: name, detail: `removed administrator ${name}` });
      console.log(`removed administrator ${name}`);
    }),
  );
  admin.command('list').description('list administrators').action(() =>
    withBackends(async ({ admins }) => {
      const list = await admins.list();
      if (list.length === 0) console.log('no administrators yet: popgate admin add NAME');
      for (const a of list) console.log(`${a.name}\tadded ${new Date(a.createdAt).toISOString()}`);
    }),
  );
}
