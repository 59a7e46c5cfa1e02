import { buildPreview } from "../../tools/preview/main";
import { RecordingMocks } from "../../tools/preview/mock-runtime";
import { previewStack, ROOT, stackConfig } from "../support/preview";

/**
 * On aws every machine boots Canonical's Ubuntu 24.04 for amd64, resolved from Canonical's
 * public SSM parameter in the machines' region (or an AMI a maintainer pinned), and a new
 * image never replaces a running machine: the instance ignores changes to `ami`.
 */

const PARAMETER = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id";
const INSTANCE = "aws:ec2/instance:Instance";

test("the mock answers Canonical's parameter deterministically, per region, and refuses anything else", () => {
  const mocks = new RecordingMocks({ accountId: "210987654321", region: "us-east-2" });
  const token = "aws:ssm/getParameter:getParameter";
  const a = mocks.call({ token, inputs: { name: PARAMETER, region: "us-east-2" } } as never) as Record<string, unknown>;
  const b = mocks.call({ token, inputs: { name: PARAMETER, region: "us-east-2" } } as never) as Record<string, unknown>;
  const c = mocks.call({ token, inputs: { name: PARAMETER, region: "eu-west-1" } } as never) as Record<string, unknown>;
  expect(a).toEqual(b);
  expect(a.insecureValue).toMatch(/^ami-[0-9a-f]{17}$/);
  expect(a).toMatchObject({ name: PARAMETER, type: "String", arn: `arn:aws:ssm:us-east-2::parameter${PARAMETER}` });
  expect(c.insecureValue).not.toBe(a.insecureValue);
  expect(() => mocks.call({ token, inputs: { name: "/ci-fleet/production/x", region: "us-east-2" } } as never)).toThrow("unmocked call aws:ssm/getParameter:getParameter");
  expect(() => mocks.call({ token, inputs: { name: PARAMETER } } as never)).toThrow("unmocked call aws:ssm/getParameter:getParameter");
  expect(() => mocks.call({ token: "aws:ec2/getAmi:getAmi", inputs: {} } as never)).toThrow("unmocked call aws:ec2/getAmi:getAmi");
});

test("on aws every instance boots the image resolved from Canonical's parameter, never the placeholder", async () => {
  const run = await previewStack("production-aws");
  const instances = run.resources.filter((r) => r.type === INSTANCE);
  expect(instances).toHaveLength(9);
  const expected = (new RecordingMocks({ accountId: "0", region: "x" }).call({ token: "aws:ssm/getParameter:getParameter", inputs: { name: PARAMETER, region: "us-east-2" } } as never) as { insecureValue: string }).insecureValue;
  for (const i of instances) {
    expect({ name: i.name, ami: i.inputs.ami }).toEqual({ name: i.name, ami: expected });
    expect((i.inputs.tags as Record<string, string>)["ci-fleet:image"]).toBe(`ssm:${PARAMETER}`);
    // A new Canonical release never replaces a machine: Salt upgrades it in place.
    expect(i.options.ignoreChanges).toEqual(["userDataBase64", "ami"]);
  }
  const json = (await buildPreview(ROOT, "production-aws")).files["resources.json"];
  expect(json).not.toContain("ami-0c55b159cbfafe1f0");
  expect(json).toContain(`"ci-fleet:image": "ssm:${PARAMETER}"`);
});

test("a pinned image is used as given, and says so", async () => {
  const aws = { ...(stackConfig("production-aws")["ci-fleet:aws"] as object), imageId: "ami-05f2c7a1e9d3b4f86" };
  const run = await previewStack("production-aws", { "ci-fleet:aws": aws });
  const instances = run.resources.filter((r) => r.type === INSTANCE);
  expect(instances).toHaveLength(9);
  for (const i of instances) {
    expect(i.inputs.ami).toBe("ami-05f2c7a1e9d3b4f86");
    expect((i.inputs.tags as Record<string, string>)["ci-fleet:image"]).toBe("pinned");
    expect(i.options.ignoreChanges).toEqual(["userDataBase64", "ami"]);
  }
});
