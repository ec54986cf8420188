#!/usr/bin/env node
// The docq CLI: runs bin/docq-cli.ts through tsx, resolved from this install (any working directory).
import { register } from "tsx/esm/api";

register();
await import("./docq-cli.ts");
