// Reference results for bastion-search's FHIRPath evaluator, from fhirpath.js with the R4
// model. Reads JSONL from stdin, one {"expression": "...", "resource": {...}} per line, and
// writes one JSONL line per input line, in order: {"result": [...]} or {"error": "..."}.
//
// resolve() needs a FHIR server in fhirpath.js. None is contacted: `fetch` is replaced by
// a stand-in that answers every `.../Type/id` URL with {"resourceType": Type, "id": id},
// which is all that `resolve() is Type` looks at. Contained references (#id) are resolved
// by fhirpath.js itself.
import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4/index.mjs';
import { createInterface } from 'node:readline';

const SERVER = 'https://server.invalid/fhir';

const isResourceType = (t) => ['Resource', 'DomainResource'].includes(r4.type2Parent[t]);

globalThis.fetch = async (url) => {
  const path = new URL(String(url)).pathname.split('/').filter((s) => s !== '');
  if (path.length >= 4 && path[path.length - 2] === '_history') path.splice(-2);
  const [type, id] = path.slice(-2);
  if (path.length >= 2 && isResourceType(type)) {
    return new Response(JSON.stringify({ resourceType: type, id }), {
      status: 200,
      headers: { 'Content-Type': 'application/fhir+json' },
    });
  }
  return new Response(JSON.stringify({ resourceType: 'OperationOutcome' }), {
    status: 404,
    headers: { 'Content-Type': 'application/fhir+json' },
  });
};

const compiled = new Map();
function compile(expression) {
  if (!compiled.has(expression)) {
    let fn;
    try {
      fn = fhirpath.compile(expression, r4, { async: true, fhirServerUrl: SERVER });
    } catch (e) {
      fn = e;
    }
    compiled.set(expression, fn);
  }
  const fn = compiled.get(expression);
  if (fn instanceof Error) throw fn;
  return fn;
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === '') continue;
  let out;
  try {
    const { expression, resource } = JSON.parse(line);
    const result = await compile(expression)(resource);
    out = { result };
  } catch (e) {
    out = { error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
