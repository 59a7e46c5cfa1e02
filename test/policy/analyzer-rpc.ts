import * as grpc from "@grpc/grpc-js";
import * as pulumi from "@pulumi/pulumi";
import { AnalyzerClient } from "@pulumi/pulumi/proto/analyzer_grpc_pb";
import * as analyzerpb from "@pulumi/pulumi/proto/analyzer_pb";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { ChildProcess, spawn } from "child_process";
import * as path from "path";
import { Policies } from "@pulumi/policy";
import { urnFor } from "./fake-args";

/**
 * The wire side of a policy pack: the requests the Pulumi engine sends an analyzer
 * (pulumi/proto/analyzer.proto, as bundled in @pulumi/pulumi) and the handlers @pulumi/policy
 * serves them with. Lets tests exercise the exact path of `pulumi preview --policy-pack`.
 */

/** A property value as the engine marshals a secret (KeepSecrets). */
export function secretOnTheWire(value: unknown): Record<string, unknown> {
  return { [pulumi.runtime.specialSigKey]: pulumi.runtime.specialSecretSig, value };
}

/** The engine's marker for a value unknown during preview. */
export const UNKNOWN_ON_THE_WIRE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

export function analyzeRequest(type: string, name: string, props: Record<string, unknown>): analyzerpb.AnalyzeRequest {
  const request = new analyzerpb.AnalyzeRequest();
  request.setType(type);
  request.setName(name);
  request.setUrn(urnFor(type, name));
  request.setProperties(Struct.fromJavaScript(props as Parameters<typeof Struct.fromJavaScript>[0]));
  const options = new analyzerpb.AnalyzerResourceOptions();
  options.setProtect(false);
  request.setOptions(options);
  return request;
}

export interface Diagnostic {
  policy: string;
  message: string;
  enforcement: "advisory" | "mandatory" | "remediate" | "disabled";
}

const LEVELS: Record<number, Diagnostic["enforcement"]> = {
  [analyzerpb.EnforcementLevel.ADVISORY]: "advisory",
  [analyzerpb.EnforcementLevel.MANDATORY]: "mandatory",
  [analyzerpb.EnforcementLevel.REMEDIATE]: "remediate",
  [analyzerpb.EnforcementLevel.DISABLED]: "disabled",
};

export function diagnosticsOf(response: analyzerpb.AnalyzeResponse): Diagnostic[] {
  return response.getDiagnosticsList().map((d) => ({
    policy: d.getPolicyname(),
    message: d.getMessage(),
    enforcement: LEVELS[d.getEnforcementlevel()],
  }));
}

type Handler<Req, Res> = (call: { request: Req }, callback: (err: unknown, res?: Res) => void) => void;

// @pulumi/policy's server module is internal (server.d.ts declares nothing): these are the
// handlers serve() registers for the Remediate and Analyze RPCs.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const server = require("@pulumi/policy/server") as {
  makeAnalyzeRpcFun(pack: string, version: string, level: string, policies: Policies): Handler<analyzerpb.AnalyzeRequest, analyzerpb.AnalyzeResponse>;
  makeRemediateRpcFun(pack: string, version: string, level: string, policies: Policies): Handler<analyzerpb.AnalyzeRequest, analyzerpb.RemediateResponse>;
};

function invoke<Req, Res>(handler: Handler<Req, Res>, request: Req): Promise<Res> {
  return new Promise((resolve, reject) =>
    handler({ request }, (err, res) => (err ? reject(err) : res ? resolve(res) : reject(new Error("no response")))),
  );
}

/** The engine's order for one resource: Remediate, then Analyze, against one pack process. */
export function inProcessAnalyzer(policies: Policies) {
  const remediate = server.makeRemediateRpcFun("ci-fleet", "0.1.0", "mandatory", policies);
  const analyze = server.makeAnalyzeRpcFun("ci-fleet", "0.1.0", "mandatory", policies);
  return async (request: analyzerpb.AnalyzeRequest): Promise<Diagnostic[]> => {
    await invoke(remediate, request);
    return diagnosticsOf(await invoke(analyze, request));
  };
}

/** The pack as the Pulumi CLI starts it: a node process in policy/ that prints its gRPC port. */
export interface ServedPack {
  client: AnalyzerClient;
  child: ChildProcess;
  stop(): void;
}

export const POLICY_DIR = path.resolve(__dirname, "../../policy");

export function servePack(timeoutMs = 30000): Promise<ServedPack> {
  return new Promise((resolve, reject) => {
    // transpile-only keeps the start fast; `tsc --noEmit -p .` type-checks the pack.
    const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", "index.ts"], {
      cwd: POLICY_DIR,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`policy pack did not print its port within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.stderr!.on("data", (d) => (stderr += String(d)));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`policy pack exited with ${code}; stderr: ${stderr}`));
    });
    child.stdout!.on("data", (d) => {
      stdout += String(d);
      const match = /^(\d+)\s*$/m.exec(stdout);
      if (!match) return;
      clearTimeout(timer);
      const client = new AnalyzerClient(`127.0.0.1:${match[1]}`, grpc.credentials.createInsecure());
      resolve({
        client,
        child,
        stop: () => {
          client.close();
          child.removeAllListeners("exit");
          child.kill();
        },
      });
    });
  });
}

export function call<Req, Res>(
  method: (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => unknown,
  request: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => method(request, (err, res) => (err ? reject(err) : resolve(res))));
}

export { Empty };
