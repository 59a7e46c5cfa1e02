import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { renderSaltMasterServiceDropIn } from "../../infra/bootstrap/salt-config";
import { renderStack, type StackRender } from "../support/salt-render";

/**
 * Every systemd unit and drop-in the fleet writes, as systemd reads it: `systemd-analyze
 * verify` (Debian's systemd; the same parser as Ubuntu 24.04's) over the units the Salt
 * tree renders for every machine of both production stacks, with the program's pillar.
 * Unknown directives and bad values are warnings or errors, and the check wants none. Executables
 * that exist only on the fleet's machines are replaced by stubs.
 */

const UNIT_FILE = /^\/etc\/systemd\/system\/([^/]+\.(?:service|timer|socket|path))$/;
const DROP_IN = /^\/etc\/systemd\/system\/([^/]+\.(?:service|timer))\.d\/([^/]+\.conf)$/;
/** Units the packages ship (their drop-ins are verified on top of a stand-in). */
const PACKAGE_UNITS = new Set(["salt-master.service", "salt-minion.service", "teleport.service"]);

interface Units {
  units: Record<string, string>;
  dropIns: Record<string, Record<string, string>>;
}

function unitsOf(files: Record<string, string>): Units {
  const out: Units = { units: {}, dropIns: {} };
  for (const [file, text] of Object.entries(files)) {
    const unit = UNIT_FILE.exec(file);
    if (unit) out.units[unit[1]] = text;
    const dropIn = DROP_IN.exec(file);
    if (dropIn) (out.dropIns[dropIn[1]] ??= {})[dropIn[2]] = text;
  }
  return out;
}

/** systemd-analyze verify of every unit in a directory laid out as /etc/systemd/system. */
function verify(units: Units): { status: number | null; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-units-"));
  const stubs = path.join(dir, "stubs");
  fs.mkdirSync(stubs);
  let stubCount = 0;
  const stubFor = new Map<string, string>();
  // An executable that is not on this machine becomes a stub (systemd checks it exists).
  const stubbed = (text: string) =>
    text.replace(/^(Exec[A-Za-z]*=)([-+@!:]*)(\/\S+)/gm, (_m, key: string, prefixes: string, exe: string) => {
      if (fs.existsSync(exe)) return `${key}${prefixes}${exe}`;
      if (!stubFor.has(exe)) {
        const stub = path.join(stubs, `stub-${stubCount++}`);
        fs.writeFileSync(stub, "#!/bin/sh\n", { mode: 0o755 });
        stubFor.set(exe, stub);
      }
      return `${key}${prefixes}${stubFor.get(exe)}`;
    });
  try {
    const names = new Set([...Object.keys(units.units), ...Object.keys(units.dropIns)]);
    for (const name of names) {
      const text = units.units[name] ?? (PACKAGE_UNITS.has(name) ? "[Unit]\nDescription=package unit stand-in\n[Service]\nExecStart=/bin/true\n" : undefined);
      if (text === undefined) throw new Error(`a drop-in for ${name}, which neither the fleet nor a known package writes`);
      fs.writeFileSync(path.join(dir, name), stubbed(text));
      for (const [conf, body] of Object.entries(units.dropIns[name] ?? {})) {
        fs.mkdirSync(path.join(dir, `${name}.d`), { recursive: true });
        fs.writeFileSync(path.join(dir, `${name}.d`, conf), stubbed(body));
      }
    }
    const run = spawnSync("systemd-analyze", ["verify", "--man=no", ...[...names].sort().map((n) => path.join(dir, n))], {
      encoding: "utf8",
      env: { ...process.env, SYSTEMD_UNIT_PATH: `${dir}:` },
    });
    if (run.error) throw new Error(`cannot run systemd-analyze (Debian package systemd): ${run.error.message}`);
    return { status: run.status, stderr: run.stderr.replaceAll(dir, "<units>") };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.each(["production", "production-aws"])("systemd units of %s", (stack) => {
  let render: StackRender;
  beforeAll(async () => {
    render = await renderStack(stack);
  }, 120_000);

  test("every machine's units and drop-ins pass systemd-analyze verify, without a warning", () => {
    let checked = 0;
    for (const [id, minion] of Object.entries(render.minions).sort()) {
      const units = unitsOf(minion.files);
      // The master's unit drop-in comes from pillar (one builder with cloud-init's copy).
      if (id.endsWith("-salt-master")) (units.dropIns["salt-master.service"] ??= {})["ci-fleet.conf"] = renderSaltMasterServiceDropIn();
      const count = Object.keys(units.units).length + Object.values(units.dropIns).reduce((n, d) => n + Object.keys(d).length, 0);
      if (count === 0) continue;
      checked += count;
      expect({ id, ...verify(units) }).toEqual({ id, status: 0, stderr: "" });
    }
    // The self-test, an agent, the pillar sync, the runner updater, Teleport's drop-in...
    expect(checked).toBeGreaterThan(15);
  });

  test("the check can fail: a misspelt directive and a bad value are reported", () => {
    const runner = Object.keys(render.minions).find((id) => Object.keys(unitsOf(render.minions[id].files).units).some((u) => u.endsWith(".timer")))!;
    const units = unitsOf(render.minions[runner].files);
    const timer = Object.keys(units.units).find((u) => u.endsWith(".timer"))!;
    const service = timer.replace(/\.timer$/, ".service");
    expect(units.units[service]).toMatch(/^Type=oneshot$/m);
    const misspelt: Units = { ...units, units: { ...units.units, [timer]: units.units[timer].replace("[Timer]", "[Timer]\nOnBootSecs=1min") } };
    expect(verify(misspelt).stderr).toContain("Unknown key 'OnBootSecs'");
    const badValue: Units = { ...units, units: { ...units.units, [service]: units.units[service].replace("Type=oneshot", "Type=oneshoot") } };
    expect(verify(badValue).stderr).toMatch(/Failed to parse service type.*oneshoot/);
  });
});
