import { loadFleetConfig } from "../../infra/config/load";
import { runUnderMocks } from "../../tools/preview/mock-runtime";

/** Runs the config loader under the mocks for stack production; returns what it threw, if anything. */
export async function loaderError(config: Record<string, string>, secretKeys: string[], offlinePreview: boolean): Promise<unknown> {
  let error: unknown;
  await runUnderMocks({ stack: "production", account: { accountId: "210987654321", region: "us-east-2" }, config, secretKeys }, () => {
    try {
      loadFleetConfig({ offlinePreview });
    } catch (e) {
      error = e;
    }
  });
  return error;
}
