import type { Command } from 'commander';
import { resolve } from 'node:path';
import type { Config } from '../config/schema.ts';
import { createBackup, inside, MANIFEST, restoreBackup, type BackupManifest } from '../ops/backup.ts';

// `popgate backup DIR` while the server runs, `popgate restore DIR` while it is stopped.
// What each part of a backup promises is described in src/ops/backup.ts and
// docs/operations.md.

export function registerBackupCommands(program: Command, loadConfig: () => Config): void {
  program
    .command('backup <dir>')
    .description('copy the databases, the queue, the Maildirs, DKIM keys and generated certificates into a new folder, while the server runs')
    .action(async (dir: string) => {
      const config = loadConfig();
      const target = resolve(dir);
      const manifest = await createBackup(config, target);
      const lines = [`backup of ${manifest.dataDir} in ${target} (${manifest.method}), ${manifest.startedAt} to ${manifest.finishedAt}`, ...summary(manifest)];
      if (manifest.method === 'hard links') {
        lines.push('the files are hard links on the disk of data_dir: copy the folder to another machine or disk (rsync -aH, borg, restic) to make it a backup');
      }
      for (const missing of manifest.notIncluded) lines.push(`not in this backup: ${missing}`);
      lines.push(`manifest: ${resolve(target, MANIFEST)}`);
      console.log(lines.join('\n'));
    });

  program
    .command('restore <dir>')
    .description('put a backup back into an empty data_dir (the server must be stopped)')
    .option('--force', 'data_dir is not empty: move what is in it aside into data_dir/.before-restore-<time> first')
    .action(async (dir: string, options: { force?: boolean }) => {
      const config = loadConfig();
      const report = await restoreBackup(config, resolve(dir), { force: Boolean(options.force) });
      const { manifest } = report;
      const lines = [`restored the backup of ${manifest.hostname} from ${manifest.startedAt} into ${config.data_dir}: ${report.files} files`, ...summary(manifest)];
      for (const aside of report.movedAside) lines.push(`what was there before is in ${aside} (remove it once the restored server works)`);
      if (report.owner) lines.push(`files owned by uid ${report.owner.uid}, gid ${report.owner.gid} (the owner of data_dir)`);
      else if (process.getuid?.() === 0) lines.push(`the files belong to root: give them to the user popgate runs as (chown -R popgate: ${config.data_dir})`);
      if (manifest.keysInData && !inside(config.dkim.keys_dir, config.data_dir)) {
        lines.push(`the DKIM keys were in data_dir/dkim, but dkim.keys_dir is now ${config.dkim.keys_dir}: move them there`);
      }
      for (const missing of manifest.notIncluded) lines.push(`not in the backup, restore it separately: ${missing}`);
      lines.push('start popgate: it brings the queue index in line with the restored spool (queue_recovered in the log); then run popgate doctor');
      console.log(lines.join('\n'));
    });
}

function summary(manifest: BackupManifest): string[] {
  const databases = manifest.databases.map((db) => `${db.file} (${db.bytes} bytes)`).join(', ');
  return [
    `  databases: ${databases || 'none'}`,
    `  queue: ${manifest.queue.messages} message(s)`,
    `  mail: ${manifest.mail.messages} message(s) in ${manifest.mail.mailboxes} mailbox(es), ${manifest.mail.bytes} bytes`,
    `  DKIM keys: ${manifest.dkimKeys}; other files: ${manifest.otherFiles}`,
  ];
}
