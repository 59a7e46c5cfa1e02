import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { buildPreview, LEAK_CHECK, outputPathProblem, printedSummary } from "../../tools/preview/main";
import { overlayFile, ROOT } from "../support/preview";
import { githubClientId, githubClientSecret } from "../config/secret-fixtures";

/**
 * One verdict of the leak check for everything written and printed: report.md never says
 * "ok" while the printed summary says FAILED, and an output path naming a secret is refused
 * before anything is created.
 */

/** A secret config value that can be a path component (hex), in an overlay of the production stack. */
const secret = githubClientSecret("OUTPATH");
const overlay = () => overlayFile({ "ci-fleet:teleportGithubClientId": githubClientId("OUTPATH"), "ci-fleet:teleportGithubClientSecret": secret });

describe("the leak check's verdict", () => {
  test("a secret in a printed line fails the check in the summary and in report.md alike", async () => {
    const out = await buildPreview(ROOT, "production");
    const row = (ok: boolean) => `| ${LEAK_CHECK} | ${ok ? "ok" : "**FAILED**"} |`;
    expect(out.files["report.md"]).toContain(row(true));
    const secret = [...out.run.secretValues].find((v) => v.length >= 16)!;
    const printed = printedSummary(out, "out/production", [`  pinned Salt tree: ${secret}`]);
    expect(printed).toContain(`FAILED  ${LEAK_CHECK}: found in the printed summary`);
    expect(out.files["report.md"]).toContain(row(false));
    expect(out.files["report.md"]).not.toContain(row(true));
    expect(out.scanner.leaks(out.files["report.md"])).toBe(false);
  }, 120_000);

  test("an output path holding a secret is a problem; an ordinary one is not", async () => {
    const out = await buildPreview(ROOT, "production", overlay());
    expect(out.run.secretValues).toContain(secret);
    expect(outputPathProblem(out, path.join(os.tmpdir(), "x", secret), "production")).toMatch(/holds a secret/);
    expect(outputPathProblem(out, path.join(os.tmpdir(), "x"), secret)).toMatch(/holds a secret/);
    expect(outputPathProblem(out, "out", "production")).toBeUndefined();
  }, 120_000);

  test("`npm start -- --out DIR/<secret>` exits 2, creates nothing and prints no secret", () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-leak-out-"));
    try {
      const r = spawnSync(process.execPath, ["-r", "./tools/preview/ts-register.js", "tools/preview/main.ts", "--config", overlay(), "--out", path.join(base, "x", secret)], { cwd: ROOT, encoding: "utf8", timeout: 240_000 });
      expect({ status: r.status, stderr: r.stderr.trim() }).toEqual({ status: 2, stderr: "ci-fleet preview: the output directory's path holds a secret value; choose another --out" });
      expect(r.stdout).not.toContain(secret);
      expect(fs.readdirSync(base)).toEqual([]);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  }, 300_000);
});
