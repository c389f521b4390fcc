import { isVmprocError } from '../errors.js';
import { parseDaemonConfig, USAGE } from './config.js';
import { createLogger, type RunningDaemon, startDaemon } from './daemon.js';

/**
 * `vmprocd`: runs in the foreground until SIGTERM or SIGINT, then stops serving and exits.
 * VMMs are not children of this process's fate: they keep running across a daemon restart.
 */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv, startupNotice?: string): Promise<void> {
  let parsed;
  try {
    parsed = parseDaemonConfig(argv, env);
  } catch (error) {
    process.stderr.write(`vmprocd: ${(error as Error).message}\n`);
    process.exit(2);
  }
  if (parsed.help) {
    process.stdout.write(USAGE);
    return;
  }
  // Sockets, logs and exit records are root's alone unless a mode says otherwise.
  process.umask(0o077);
  const logger = createLogger(parsed.config);
  if (startupNotice) logger.warn({ vmmBin: parsed.config.vmmBin }, startupNotice);
  // Listening before the daemon serves: a SIGTERM sent as soon as "vmprocd serving" is logged
  // (writing that line wakes whoever reads it, often before this process runs again) would
  // otherwise find no handler and kill the process outright. One that comes during the start
  // stops the daemon once it is up.
  let daemon: RunningDaemon | undefined;
  let stopRequested = false;
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'signal received');
    stopRequested = true;
    daemon?.stop().catch(() => undefined); // reported through daemon.stopped
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  try {
    daemon = await startDaemon(parsed.config, logger);
  } catch (error) {
    logger.fatal({ err: error }, isVmprocError(error) ? error.message : 'vmprocd failed to start');
    process.exitCode = 1;
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
    return;
  }
  // However it stops: by a signal (exit 0), or by itself on a fatal error such as a lost
  // state-dir lock, or uncleanly (exit 1, so that systemd and operators see a failure). The
  // daemon has logged why.
  daemon.stopped.then(
    () => process.exit(0),
    () => process.exit(1),
  );
  if (stopRequested) daemon.stop().catch(() => undefined);
}
