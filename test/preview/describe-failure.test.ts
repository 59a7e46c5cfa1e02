import { BootstrapInputError } from "../../infra/bootstrap/cloud-config";
import { describeFailure } from "../../tools/preview/main";

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
