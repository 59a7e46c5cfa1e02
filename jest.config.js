/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    // isolatedModules: type checking is `npm run typecheck`; this keeps the suite fast.
    "^.+\\.ts$": ["ts-jest", { isolatedModules: true }],
  },
  testTimeout: 60000,
};
