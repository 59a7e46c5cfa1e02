import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { writePreview } from "../../tools/preview/main";

/**
 * writePreview: out/<stack> ends up holding exactly the files given, whatever was there;
 * what the last run wrote is written over in place (no tree removed and made again), and
 * nothing planted there (a link, a file with other names, a directory) is followed.
 */

function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const rel = path.relative(dir, p);
      if (e.isSymbolicLink()) out[rel] = `-> ${fs.readlinkSync(p)}`;
      else if (e.isDirectory()) walk(p);
      else out[rel] = fs.readFileSync(p, "utf8");
    }
  };
  walk(dir);
  return out;
}

const FILES = { "resources.json": "{}\n", "report.md": "# r\n", "machines/a/user-data": "#cloud-config\na\n", "machines/b/user-data": "#cloud-config\nb\n" };

describe("writePreview", () => {
  let root: string;
  let outside: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-write-"));
    outside = fs.mkdtempSync(path.join(os.tmpdir(), "ci-fleet-outside-"));
    fs.writeFileSync(path.join(outside, "victim"), "untouched\n");
  });
  afterEach(() => {
    jest.restoreAllMocks();
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
  });

  test("writes exactly the files given; a second run leaves no stale file or directory", async () => {
    const dir = await writePreview(root, "production", FILES);
    expect(tree(dir)).toEqual(FILES);
    const fewer = { "resources.json": "{\"x\":1}\n", "machines/b/user-data": "#cloud-config\nb2\n", "machines/c/user-data": "c\n" };
    await writePreview(root, "production", fewer);
    expect(tree(dir)).toEqual(fewer);
    expect(fs.existsSync(path.join(dir, "machines", "a"))).toBe(false);
    for (const f of Object.keys(fewer)) expect(fs.statSync(path.join(dir, f)).mode & 0o777).toBe(0o644 & ~process.umask());
  });

  test("rewriting what the last run wrote removes nothing: files are written over in place", async () => {
    const dir = await writePreview(root, "production", FILES);
    // Held open across the run: a file or directory removed and made again would show no links.
    const file = fs.openSync(path.join(dir, "machines/a/user-data"), "r");
    const machineDir = fs.openSync(path.join(dir, "machines/a"), "r");
    try {
      const changed = { ...FILES, "machines/a/user-data": "#cloud-config\nchanged\n" };
      await writePreview(root, "production", changed);
      expect(tree(dir)).toEqual(changed);
      expect(fs.fstatSync(file).nlink).toBe(1);
      expect(fs.fstatSync(machineDir).nlink).toBeGreaterThan(0);
      expect(fs.readFileSync(file, "utf8")).toBe("#cloud-config\nchanged\n");
    } finally {
      fs.closeSync(file);
      fs.closeSync(machineDir);
    }
  });

  test("nothing planted in the old tree is followed: links, hard links, odd modes and directories in a file's place are replaced", async () => {
    const dir = await writePreview(root, "production", FILES);
    const victim = path.join(outside, "victim");
    // A symbolic link where a file goes, a link where a directory goes, a hard link, a file of another mode, a directory where a file goes.
    fs.rmSync(path.join(dir, "machines/a/user-data"));
    fs.symlinkSync(victim, path.join(dir, "machines/a/user-data"));
    fs.rmSync(path.join(dir, "machines/b"), { recursive: true });
    fs.symlinkSync(outside, path.join(dir, "machines/b"));
    fs.rmSync(path.join(dir, "resources.json"));
    fs.linkSync(victim, path.join(dir, "resources.json"));
    fs.chmodSync(path.join(dir, "report.md"), 0o666);
    fs.mkdirSync(path.join(dir, "machines/c/user-data"), { recursive: true });
    const files = { ...FILES, "machines/c/user-data": "c\n" };
    await writePreview(root, "production", files);
    expect(tree(dir)).toEqual(files);
    expect(fs.readFileSync(victim, "utf8")).toBe("untouched\n");
    expect(fs.readdirSync(outside)).toEqual(["victim"]);
    expect(fs.lstatSync(path.join(dir, "machines/b")).isDirectory()).toBe(true);
    expect(fs.statSync(path.join(dir, "report.md")).mode & 0o777).toBe(0o644 & ~process.umask());
    expect(fs.statSync(path.join(dir, "resources.json")).nlink).toBe(1);
  });

  test("an existing tree ends with the modes a fresh run gives: directories and files alike", async () => {
    const fresh = await writePreview(fs.mkdtempSync(path.join(root, "fresh-")), "production", FILES);
    const modes = (dir: string) => Object.fromEntries(["", "machines", "machines/a", "machines/b", ...Object.keys(FILES)].map((rel) => [rel, fs.statSync(path.join(dir, rel)).mode & 0o7777]));
    const dir = await writePreview(root, "production", FILES);
    for (const rel of ["", "machines", "machines/a"]) fs.chmodSync(path.join(dir, rel), 0o700);
    fs.chmodSync(path.join(dir, "machines/b"), 0o775);
    await writePreview(root, "production", FILES);
    expect(modes(dir)).toEqual(modes(fresh));
    expect(modes(dir)["machines"]).toBe(0o777 & ~process.umask());
  });

  test("out/<stack> itself a link: the link is replaced by a directory, its target untouched", async () => {
    fs.symlinkSync(outside, path.join(root, "production"));
    const dir = await writePreview(root, "production", FILES);
    expect(fs.lstatSync(dir).isDirectory()).toBe(true);
    expect(tree(dir)).toEqual(FILES);
    expect(fs.readdirSync(outside)).toEqual(["victim"]);
  });
});
