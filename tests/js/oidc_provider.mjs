// A real, certified OpenID provider (npm `oidc-provider`) on loopback, issuing JWT access
// tokens for Bastion's FHIR base as a Keycloak or Okta deployment would. Used by the black-box
// test `external_idp`, which configures Bastion with a [[trusted_issuers]] entry for it.
//
// Environment: PORT, AUDIENCE (Bastion's FHIR base), CLIENT_ID, CLIENT_SECRET, SCOPES,
// FHIR_USER, PATIENT, and optionally ROLES (space-separated, as realm_access.roles),
// ORGANIZATION and CLEARANCE. Prints "ready <issuer>" when listening; exits when standard input closes
// (the test ended) or after five minutes.

import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const { PORT, AUDIENCE, CLIENT_ID, CLIENT_SECRET, SCOPES, FHIR_USER, PATIENT, ROLES, ORGANIZATION, CLEARANCE } = process.env;
const issuer = `http://127.0.0.1:${PORT}`;

const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: "jwk" }), kid: "idp-rs256", alg: "RS256", use: "sig" };

const provider = new Provider(issuer, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    grant_types: ["client_credentials"],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: "client_secret_basic",
    scope: SCOPES,
  }],
  scopes: SCOPES.split(" "),
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      // Any resource: the test also asks for tokens meant for another server.
      getResourceServerInfo: (_ctx, resource) => ({
        scope: SCOPES, audience: resource, accessTokenFormat: "jwt", accessTokenTTL: 300, jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  // Keycloak writes realm roles under realm_access.roles; an organization claim is a
  // deployment's own mapper.
  extraTokenClaims: () => ({
    fhirUser: FHIR_USER,
    patient: PATIENT,
    ...(ROLES ? { realm_access: { roles: ROLES.split(" ") } } : {}),
    ...(ORGANIZATION ? { organization: ORGANIZATION } : {}),
    ...(CLEARANCE ? { clearance: CLEARANCE } : {}),
  }),
  ttl: { ClientCredentials: 300 },
});
provider.proxy = false;
const server = provider.listen(Number(PORT), "127.0.0.1", () => console.log(`ready ${issuer}`));
const stop = () => { server.close(); process.exit(0); };
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
setTimeout(stop, 300_000).unref();
