// A SMART standalone launch in headless Chromium, driven by SMART's own JavaScript client
// (npm `fhirclient`): the app page asks Bastion for authorization, the browser signs in on
// Bastion's login page and approves on its consent page, and the app reads the patient.
//
// Run by the black-box test `browser::fhirclient_standalone_launch_reads_the_patient`, which
// starts Bastion with a public client whose redirect URI is this script's app page. Prints
// one JSON line with what the app saw; exits non-zero on any failure. Stops by itself.
//
// Environment: FHIR_BASE, APP_PORT, CLIENT_ID, SCOPE, USERNAME, PASSWORD.

import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const { FHIR_BASE, APP_PORT, CLIENT_ID, SCOPE, USERNAME, PASSWORD } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const appOrigin = `http://127.0.0.1:${APP_PORT}`;

const fail = (message) => {
  console.error(`browser test failed: ${message}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 90 s"), 90_000).unref();

const pages = {
  "/launch.html": `<!DOCTYPE html><html><head><meta charset="utf-8"><script src="/fhir-client.js"></script></head>
<body><p>Launching…</p><script>
FHIR.oauth2.authorize({
  iss: ${JSON.stringify(FHIR_BASE)},
  clientId: ${JSON.stringify(CLIENT_ID)},
  scope: ${JSON.stringify(SCOPE)},
  redirectUri: "/index.html",
  pkceMode: "required"
}).catch(e => { document.body.dataset.error = String(e); });
</script></body></html>`,
  "/index.html": `<!DOCTYPE html><html><head><meta charset="utf-8"><script src="/fhir-client.js"></script></head>
<body><p>App</p><script>
FHIR.oauth2.ready()
  .then(client => client.patient.read().then(p => ({ client, p })))
  .then(({ client, p }) => {
    document.body.dataset.result = JSON.stringify({
      patientId: client.patient.id,
      resourceType: p.resourceType,
      id: p.id,
      family: p.name && p.name[0] && p.name[0].family,
      scope: client.state.tokenResponse.scope,
      hasIdToken: !!client.state.tokenResponse.id_token,
      hasRefreshToken: !!client.state.tokenResponse.refresh_token,
      fhirUser: client.getFhirUser()
    });
  })
  .catch(e => { document.body.dataset.error = String(e); });
</script></body></html>`,
};
const clientJs = readFileSync(join(here, "node_modules/fhirclient/build/fhir-client.js"));

const server = createServer((req, res) => {
  const path = req.url.split("?")[0];
  if (path === "/fhir-client.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(clientJs);
  }
  if (pages[path]) {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(pages[path]);
  }
  res.writeHead(404).end();
});
await new Promise((ok) => server.listen(Number(APP_PORT), "127.0.0.1", ok));

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  const seen = { consentScopes: [] };
  await page.goto(`${appOrigin}/launch.html`);
  // Bastion's login page (fixed fields: username, password).
  await page.waitForSelector('input[name="username"]', { timeout: 30_000 });
  seen.loginUrl = page.url();
  await page.fill('input[name="username"]', USERNAME);
  await page.fill('input[name="password"]', PASSWORD);
  await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  // The consent page: every requested scope a ticked checkbox named scope.
  await page.waitForSelector('button[name="decision"][value="approve"]', { timeout: 30_000 });
  seen.consentScopes = await page.$$eval('input[name="scope"]', (els) =>
    els.map((e) => ({ value: e.value, checked: e.checked })));
  await page.click('button[name="decision"][value="approve"]');
  await page.waitForFunction(
    () => document.body && (document.body.dataset.result || document.body.dataset.error),
    null,
    { timeout: 30_000 },
  );
  const error = await page.evaluate(() => document.body.dataset.error);
  if (error) fail(`the app reported: ${error}`);
  const result = JSON.parse(await page.evaluate(() => document.body.dataset.result));
  console.log(JSON.stringify({ ...result, ...seen, finalUrl: page.url() }));
} catch (e) {
  fail(String(e));
} finally {
  await browser.close();
  server.close();
}
