import * as tls from "@pulumi/tls";
import { BootstrapInputError } from "../../infra/bootstrap/cloud-config";
import { describeFailure } from "../../tools/preview/main";
import { runUnderMocks, secretsSeenByMocks } from "../../tools/preview/mock-runtime";
import { SecretScanner } from "../../tools/preview/secret-scan";

/** Errors that are not config errors are printed as one line: no stack, no object dump, no secret. */

const SECRET = "hunter2-very-secret-value";

const CASES: [string, unknown, string][] = [
  ["a bootstrap input error", new BootstrapInputError(["saltRepository.deployKeyPem: expected an SSH private key", "saltRepository: a deploy key needs an SSH URL"]), "BootstrapInputError: invalid bootstrap input: saltRepository.deployKeyPem: expected an SSH private key; saltRepository: a deploy key needs an SSH URL"],
  ["a plain error carrying a secret", new Error(`cannot use ${SECRET}\nsecond line`), "cannot use [secret] second line"],
  ["a rejected non-error", { problems: [1], promise: {} }, "unknown error"],
  ["a string", `oops ${SECRET}`, "oops [secret]"],
];

test.each(CASES)("%s", (_what, error, expected) => {
  const line = describeFailure(error, [SECRET]);
  expect(line).toBe(expected);
  expect(line).not.toContain("\n");
});

describe("every form of a secret is masked, as the leak scan finds it", () => {
  const pem = `-----BEGIN EC PRIVATE KEY-----\n${"MHcCAQEEIGx5b2tlZC1hdC1ieS1hLXJldmlld2VyLWhlcmUtYW5kLXRoZXJl".match(/.{1,20}/g)!.join("\n")}\n-----END EC PRIVATE KEY-----\n`;
  const FORMS: [string, string][] = [
    ["base64 standing alone", Buffer.from(SECRET).toString("base64")],
    ["base64 at offset 1 in a larger text", Buffer.from(`x${SECRET} and more`).toString("base64")],
    ["base64 at offset 2 in a larger text", Buffer.from(`xy${SECRET} and more`).toString("base64")],
    ["JSON-escaped", JSON.stringify(`say "${SECRET}"`)],
    ["split by a line break and indentation", `${SECRET.slice(0, 10)}\n    ${SECRET.slice(10)}`],
  ];
  test.each(FORMS)("%s", (_what, form) => {
    const line = describeFailure(new Error(`bad value: ${form}`), [SECRET, "line \"q\" secret"]);
    expect(line).toContain("[secret]");
    expect(new SecretScanner([SECRET]).leaks(line)).toBe(false);
  });

  test("a PEM, re-wrapped in the message", () => {
    const body = pem.split("\n").slice(1, -2).join("");
    const line = describeFailure(new Error(`cannot parse key:\n${body.match(/.{1,33}/g)!.join("\n")}`), [pem]);
    expect(line).toBe("cannot parse key: [secret]");
  });

  test("with the run's scanner: keys the program generated are masked too", async () => {
    let key!: tls.PrivateKey;
    await runUnderMocks({ stack: "describe", account: { accountId: "210987654321", region: "us-east-2" } }, () => {
      key = new tls.PrivateKey("k", { algorithm: "ECDSA" });
    });
    const generated = await new Promise<string>((resolve) => key.privateKeyPem.apply((v) => (resolve(v), v)));
    // What npm start hands describeFailure when a run fails: the generated key is among them.
    expect(secretsSeenByMocks()).toContain(generated);
    const line = describeFailure(new Error(`key was ${generated}`), new SecretScanner(secretsSeenByMocks()));
    expect(line).toBe("key was [secret]");
  });
});
