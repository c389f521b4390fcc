#!/usr/bin/env node
/** `vmprocctl`: the command-line client of vmprocd. See `vmprocctl --help`. */
import { runCli } from '../cli/program.js';

// `vmprocctl watch | head -1`: a reader that went away ends the command quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});
process.exitCode = await runCli(process.argv.slice(2));
