/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    // tsconfig's isolatedModules makes ts-jest transpile only; `npm run typecheck` type-checks.
    "^.+\\.ts$": ["ts-jest", {}],
  },
  testTimeout: 60000,
};
