#!/usr/bin/env node
import './threadpool.js';
import { main } from '../daemon/main.js';

await main(process.argv.slice(2), process.env);
