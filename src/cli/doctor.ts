import type { Command } from 'commander';
import { normalizeDomain } from '../accounts/address.ts';
import { parseDuration } from '../config/duration.ts';
import type { Config } from '../config/schema.ts';
import { runDoctor } from '../ops/doctor.ts';
import { CHECKS, exitCodeOf, formatFinding, type CheckName } from '../ops/findings.ts';

// `popgate doctor`: one line per finding, or JSON, and an exit code for monitoring in the
// convention of Nagios plugins: 0 all passed, 1 warnings, 2 failures, 3 the checks could not
// run (a wrong option). A config that cannot be read exits with 2 like every command.

/** Exit code when doctor itself cannot run, so monitoring does not read it as a warning. */
const CANNOT_CHECK = 3;

interface DoctorFlags {
  domain: string[];
  only?: string;
  ntp?: string;
  timeout: string;
  json?: boolean;
}

export function registerDoctorCommand(program: Command, loadConfig: () => Config): void {
  program
    .command('doctor')
    .description('check what mail needs: MX, address and PTR, SPF, DKIM, DMARC, MTA-STS, the certificate, the listeners, storage, the queue, the databases')
    .option('--domain <domain>', 'check this local domain only (repeat for several; default: every local domain)', (value: string, all: string[]) => [...all, value], [])
    .option('--only <checks>', `comma-separated checks to run: ${CHECKS.join(', ')}`)
    .option('--ntp <server>', 'compare the clock with this NTP server (host or host:port)')
    .option('--timeout <duration>', 'how long one network probe may take', '5s')
    .option('--json', 'print the findings as JSON')
    .addHelpText('after', '\nExit code: 0 all passed, 1 warnings, 2 failures, 3 the checks could not run.')
    .action(async (flags: DoctorFlags) => {
      const config = loadConfig();
      const problem = usageProblem(flags);
      if (problem) {
        console.error(`popgate: ${problem}`);
        process.exitCode = CANNOT_CHECK;
        return;
      }
      try {
        const findings = await runDoctor(config, {
          domains: flags.domain.length > 0 ? flags.domain.map((domain) => normalizeDomain(domain)!) : undefined,
          only: flags.only?.split(',').map((name) => name.trim() as CheckName),
          ntpServer: flags.ntp,
          timeoutMs: parseDuration(flags.timeout),
        });
        const exitCode = exitCodeOf(findings);
        if (flags.json) {
          const status = ['ok', 'warn', 'fail'][exitCode];
          process.stdout.write(`${JSON.stringify({ checkedAt: new Date().toISOString(), hostname: config.hostname, status, exitCode, findings }, null, 2)}\n`);
        } else {
          process.stdout.write(findings.map((finding) => `${formatFinding(finding)}\n`).join(''));
        }
        process.exitCode = exitCode;
      } catch (error) {
        console.error(`popgate: doctor could not finish: ${(error as Error).message}`);
        process.exitCode = CANNOT_CHECK;
      }
    });
}

function usageProblem(flags: DoctorFlags): string | undefined {
  const unknown = flags.only?.split(',').map((name) => name.trim()).filter((name) => !(CHECKS as readonly string[]).includes(name));
  if (unknown && unknown.length > 0) return `--only: unknown check ${unknown.join(', ')} (the checks: ${CHECKS.join(', ')})`;
  const badDomain = flags.domain.find((domain) => !normalizeDomain(domain));
  if (badDomain !== undefined) return `--domain ${badDomain}: not a domain name`;
  const timeout = parseDuration(flags.timeout);
  if (timeout === undefined || timeout <= 0) return `--timeout ${flags.timeout}: give a duration such as "5s" or "500ms"`;
  return undefined;
}
