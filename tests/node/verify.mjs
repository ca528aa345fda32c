// Verifies deliveries with the npm `standardwebhooks` package, as a partner's Node.js receiver would.
// stdin: {"cases": [{"name", "secret", "body_base64", "headers"}]}; stdout: {name: "verified" | "rejected: <why>"}.
import { Webhook } from "standardwebhooks";

let input = "";
for await (const chunk of process.stdin) input += chunk;

const outcomes = {};
for (const { name, secret, body_base64: body, headers } of JSON.parse(input).cases) {
  try {
    // The raw body bytes as received: verifying a re-serialised object would not be a check.
    new Webhook(secret).verify(Buffer.from(body, "base64"), headers);
    outcomes[name] = "verified";
  } catch (error) {
    outcomes[name] = `rejected: ${error.message}`;
  }
}
process.stdout.write(JSON.stringify(outcomes) + "\n");
