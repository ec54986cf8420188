import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { jobEnvironment } from "./job-env.js";

describe("jobEnvironment", () => {
  const server = {
    PATH: "/bin",
    LANG: "C.UTF-8",
    HOME: "/root",
    DOCQ_ADMIN_KEY: "secret",
    S3_SECRET_KEY: "s3",
    MONGO_URL: "mongodb://u:p@h/",
    EXTRA: "x",
  };

  it("passes PATH and the locale, HOME and TMPDIR are the work dir, nothing else of the server's", () => {
    assert.deepEqual(jobEnvironment({ workDir: "/tmp/w", from: server }), {
      PATH: "/bin",
      LANG: "C.UTF-8",
      HOME: "/tmp/w",
      TMPDIR: "/tmp/w",
    });
  });

  it("adds what jobs.passEnv names and the job's own env, which wins", () => {
    const env = jobEnvironment({
      workDir: "/w",
      from: server,
      passEnv: ["EXTRA", "UNSET"],
      jobEnv: { MODEL: "small", LANG: "fr_FR.UTF-8" },
    });
    assert.deepEqual(env, { PATH: "/bin", LANG: "fr_FR.UTF-8", EXTRA: "x", HOME: "/w", TMPDIR: "/w", MODEL: "small" });
  });

  it("gives a default PATH when the server has none", () => {
    assert.equal(jobEnvironment({ workDir: "/w", from: {} }).PATH, "/usr/local/bin:/usr/bin:/bin");
  });
});
