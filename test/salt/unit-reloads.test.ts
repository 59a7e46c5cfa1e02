import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

/**
 * Every systemd unit file or drop-in a formula writes is loaded by systemd before it is used.
 * Salt's systemd module (salt/modules/systemd_service.py `_check_for_unit_changes(name)`) runs
 * `systemctl daemon-reload` only for the unit a service state starts or restarts, and only when
 * `systemctl status` of THAT unit says it changed: a .service started by a .timer is never
 * reloaded that way. So each unit file is either the unit its own service state watches, or it
 * triggers an explicit `systemctl daemon-reload` (cmd.run onchanges) that the service states of
 * its units require. Drop-ins (`<unit>.d/*.conf`) must trigger the explicit reload (the status
 * text check is the only other path). All formulas, every fixture minion (both providers).
 */

const python = process.env.CI_FLEET_PYTHON ?? (fs.existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
const ROOT = path.resolve(__dirname, "../..");

type Fn = { function: string; args: Record<string, any> };
type Minion = { errors: string[]; states: Record<string, { sls: string; functions: Fn[] }> };

const minions: Record<string, Minion> = (() => {
  const proc = spawnSync(python, [path.join(ROOT, "test/access/highstate.py"), "--salt-root", path.join(ROOT, "salt")], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (proc.status !== 0) throw new Error(`highstate.py exited ${proc.status}:\n${proc.stderr}`);
  return JSON.parse(proc.stdout);
})();

const UNIT = /^\/etc\/systemd\/system\/([^/]+\.(service|timer|socket|path|mount))$/;
const DROP_IN = /^\/etc\/systemd\/system\/([^/]+\.(service|timer|socket|path|mount))\.d\/[^/]+\.conf$/;
const unitName = (name: string) => (/\.(service|timer|socket|path|mount)$/.test(name) ? name : `${name}.service`);
const refsFile = (list: unknown, id: string) => ((list as Record<string, string>[] | undefined) ?? []).some((r) => r.file === id);
const refsCmd = (list: unknown, id: string) => ((list as Record<string, string>[] | undefined) ?? []).some((r) => r.cmd === id);

function flat(m: Minion) {
  return Object.entries(m.states).flatMap(([id, s]) => s.functions.map((f) => ({ id, sls: s.sls, ...f })));
}

/** Unit files known not to be reloaded (none): an entry is asserted to be still open. */
const KNOWN_OPEN = new Set<string>([]);

describe("systemd units and drop-ins every formula writes are loaded before use", () => {
  test("the fixtures render and write units", () => {
    const all = Object.values(minions).flatMap((m) => flat(m).filter((s) => s.function === "file.managed" && (UNIT.test(s.args.name) || DROP_IN.test(s.args.name))));
    expect(all.length).toBeGreaterThan(0);
  });

  test.each(Object.keys(minions))("%s", (id) => {
    const states = flat(minions[id]);
    for (const file of states.filter((s) => s.function === "file.managed" && (UNIT.test(String(s.args.name)) || DROP_IN.test(String(s.args.name))))) {
      const dropIn = DROP_IN.exec(String(file.args.name));
      const unit = dropIn ? dropIn[1] : UNIT.exec(String(file.args.name))![1];
      const services = states.filter((s) => s.function.startsWith("service.") && unitName(String(s.args.name)) === unit);
      const watchedBySameUnit = !dropIn && services.some((s) => refsFile(s.args.watch, file.id));
      const reload = states.find((s) => s.function === "cmd.run" && s.args.name === "systemctl daemon-reload" && refsFile(s.args.onchanges, file.id));
      const loaded = watchedBySameUnit || reload !== undefined;
      if (KNOWN_OPEN.has(file.id)) {
        expect({ id, file: file.id, stillOpen: !loaded }).toEqual({ id, file: file.id, stillOpen: true });
        continue;
      }
      expect({ id, file: file.id, loaded }).toEqual({ id, file: file.id, loaded: true });
      if (reload && !watchedBySameUnit) {
        // The service states of this unit (or of the timer that starts it) run after the reload.
        const stem = unit.replace(/\.(service|timer|socket|path|mount)$/, "");
        const users = states.filter((s) => s.function.startsWith("service.") && unitName(String(s.args.name)).replace(/\.(service|timer|socket|path|mount)$/, "") === stem);
        for (const s of users) expect({ id, state: s.id, requiresReload: refsCmd(s.args.require, reload.id) }).toEqual({ id, state: s.id, requiresReload: true });
      }
    }
  });
});
