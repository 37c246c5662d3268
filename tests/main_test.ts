import { main } from "../main.ts";

Deno.test("main prints its version", async () => {
  if (await main(["--version"]) !== 0) throw new Error("--version must exit 0");
});
