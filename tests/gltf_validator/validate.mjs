#!/usr/bin/env node
// Validate GLB files with the Khronos glTF validator pinned in package.json.
//
//   node validate.mjs [--max-issues N] [--] FILE.glb [FILE2.glb ...]
//
// Prints one JSON object per line on stdout, one per file and in argument order: the validator's
// own report (uri, validatorVersion, issues.{numErrors, numWarnings, numInfos, numHints,
// messages, truncated}, info.{drawCallCount, totalTriangleCount, totalVertexCount, ...}).
// Judging the report is the caller's job: a file with errors still exits 0.
//
// Exit codes: 0 every file was validated; 1 the validator itself rejected a file (it only does
// so for invalid options, which would be a bug here); 2 usage error or an unreadable file.
//
// GLB only: `format: "glb"` skips the validator's guess from the first byte, so an empty or
// truncated file is reported as GLB errors instead of an "unable to detect format" rejection.
// A GLB has no business referring to external files, so external resources are refused (the
// validator reports each such reference as an IO_ERROR).

import { readFile } from "node:fs/promises";
import * as validator from "gltf-validator";

const USAGE = "usage: node validate.mjs [--max-issues N] [--] FILE.glb [FILE2.glb ...]";

function usageError(message) {
  process.stderr.write(`validate.mjs: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  // 0 = unlimited. Counts (numErrors, ...) only cover the messages kept, so a limit would make
  // them lie; keep it unlimited unless the output size becomes a problem.
  let maxIssues = 0;
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      files.push(...argv.slice(i + 1));
      break;
    } else if (arg === "--max-issues") {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value < 0) usageError("--max-issues needs an integer >= 0");
      maxIssues = value;
    } else if (arg === "-h" || arg === "--help") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (arg.startsWith("-")) {
      usageError(`unknown option ${arg}`);
    } else {
      files.push(arg);
    }
  }
  if (files.length === 0) usageError("no file given");
  return { maxIssues, files };
}

async function main() {
  const { maxIssues, files } = parseArgs(process.argv.slice(2));

  // Read everything first so an unreadable file fails the run before any report is printed:
  // the caller never has to match a partial list of reports to its arguments.
  const contents = [];
  for (const file of files) {
    try {
      contents.push(await readFile(file));
    } catch (err) {
      process.stderr.write(`validate.mjs: cannot read ${file}: ${err.message}\n`);
      process.exit(2);
    }
  }

  let status = 0;
  for (let i = 0; i < files.length; i++) {
    const bytes = contents[i];
    try {
      const report = await validator.validateBytes(
        new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        {
          uri: files[i],
          format: "glb",
          maxIssues,
          writeTimestamp: false,
          externalResourceFunction: (uri) =>
            Promise.reject(`external resource '${uri}' refused: a GLB must be self-contained`),
        },
      );
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } catch (err) {
      // The validator rejects (with a string) only when it cannot start validating at all.
      process.stderr.write(`validate.mjs: validator rejected ${files[i]}: ${err}\n`);
      status = 1;
    }
  }
  return status;
}

process.exitCode = await main();
