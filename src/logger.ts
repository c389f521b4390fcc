/**
 * The logging the supervisor needs, shaped like pino's (object first, then message), so the
 * daemon passes its pino logger and tests pass a silent or recording one.
 */
export interface Logger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
  /** An error the daemon stops for (it logs it, then stops itself). */
  fatal(fields: object, message: string): void;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  fatal() {},
};
