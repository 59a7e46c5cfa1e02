import * as aws from "@pulumi/aws";
import * as fs from "fs";
import * as path from "path";
import { AnalyzerInfo, EnforcementLevel } from "@pulumi/pulumi/proto/analyzer_pb";
import { policies } from "../../policy/policies";
import { EC2_INSTANCE_TYPE } from "../../policy/machines";
import { Empty, POLICY_DIR, ServedPack, analyzeRequest, call, diagnosticsOf, secretOnTheWire, servePack } from "./analyzer-rpc";
import { pulumiTypeOf } from "./fake-args";
import { deployRole, runnerInstance, trustDocument } from "./known-good";

/**
 * Starts policy/index.ts the way the Pulumi CLI's policy-pack runner does (a node process in
 * policy/ that prints a gRPC port) and talks to it over gRPC like the engine.
 */
describe("the served policy pack (gRPC, as pulumi preview --policy-pack policy talks to it)", () => {
  let pack: ServedPack;
  beforeAll(async () => {
    pack = await servePack();
  });
  afterAll(() => pack?.stop());

  it("announces every policy with its enforcement level", async () => {
    const info = await call<Empty, AnalyzerInfo>(pack.client.getAnalyzerInfo.bind(pack.client), new Empty());
    expect(info.getName()).toBe("ci-fleet");
    expect(info.getVersion()).toBe(JSON.parse(fs.readFileSync(path.join(POLICY_DIR, "package.json"), "utf8")).version);
    const announced = info.getPoliciesList().map((p) => p.getName());
    expect(announced).toEqual(policies.map((p) => p.name));
    expect(new Set(announced).size).toBe(announced.length);
    const levels = info.getPoliciesList().map((p) => [p.getName(), p.getEnforcementlevel()]);
    expect(levels).toEqual(
      // Every policy blocks, except these two (named, so a policy that stops blocking fails here).
      policies.map((p) => [
        p.name,
        { "machine-user-data-secret": EnforcementLevel.REMEDIATE, "iam-deploy-role-permissions-boundary": EnforcementLevel.ADVISORY }[p.name] ??
          EnforcementLevel.MANDATORY,
      ]),
    );
  });

  it("blocks a role trusting * and passes the known-good deploy role", async () => {
    const type = pulumiTypeOf(aws.iam.Role);
    const bad = analyzeRequest(type, "deploy", { ...deployRole(), assumeRolePolicy: JSON.stringify(trustDocument("*")) });
    expect(diagnosticsOf(await call(pack.client.analyze.bind(pack.client), bad)).map((d) => [d.policy, d.enforcement])).toEqual([
      ["iam-trust-no-wildcard-or-root", "mandatory"],
    ]);
    const good = analyzeRequest(type, "deploy", deployRole());
    expect(diagnosticsOf(await call(pack.client.analyze.bind(pack.client), good))).toEqual([]);
  });

  it("sees secret userData as secret across Remediate then Analyze", async () => {
    const remediateThenAnalyze = async (name: string, userData: unknown) => {
      const request = analyzeRequest(EC2_INSTANCE_TYPE, name, { ...runnerInstance(), userData });
      await call(pack.client.remediate.bind(pack.client), request);
      return diagnosticsOf(await call(pack.client.analyze.bind(pack.client), request)).map((d) => [d.policy, d.enforcement]);
    };
    expect(await remediateThenAnalyze("secret", secretOnTheWire("#cloud-config\n"))).toEqual([]);
    expect(await remediateThenAnalyze("plain", "#cloud-config\n")).toEqual([["machine-user-data-secret", "mandatory"]]);
  });
});
