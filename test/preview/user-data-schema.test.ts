import * as YAML from "yaml";
import { buildPreview } from "../../tools/preview/main";
import { ROOT } from "../support/preview";
import { cloudInitSchema, compileCloudInitSchema } from "../support/cloud-init";

/**
 * What `npm start` writes to out/<stack>/machines/<name>/user-data, checked by cloud-init's
 * own validators: the JSON schema (ajv) and the real `cloud-init schema` CLI.
 */
describe.each(["production", "production-aws"])("user-data written by the preview of %s", (stack) => {
  let files: Record<string, string> = {};
  beforeAll(async () => {
    const out = await buildPreview(ROOT, stack);
    files = Object.fromEntries(Object.entries(out.files).filter(([f]) => f.startsWith("machines/")));
  });

  test("one per machine, each a #cloud-config", () => {
    expect(Object.keys(files)).toHaveLength(9);
    for (const text of Object.values(files)) expect(text.startsWith("#cloud-config\n")).toBe(true);
  });

  test("passes cloud-init's JSON schema", () => {
    const validate = compileCloudInitSchema();
    for (const [file, text] of Object.entries(files)) {
      const ok = validate(YAML.parse(text));
      expect({ file, errors: ok ? [] : validate.errors }).toEqual({ file, errors: [] });
    }
  });

  test("passes `cloud-init schema --config-file`", async () => {
    const results = await cloudInitSchema(files);
    for (const [file, r] of Object.entries(results)) expect({ file, ...r, output: r.code === 0 ? "" : r.output }).toEqual({ file, code: 0, output: "" });
  });
});
