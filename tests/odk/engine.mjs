// @getodk/xforms-engine (ODK Web Forms' engine) headless under Node, for
// tests/it/odk_xform.rs: loads forms and fills many variants of their
// answers in one process. Each form is parsed once; each variant is a
// fresh instance of it. Node resolves packages from NODE_PATH only for
// CommonJS, so the engine is imported by its path under the directory the
// tests give in CASESYNC_TEST_ODK_NODE_MODULES.
//
//   node engine.mjs JOBS.json
//
// JOBS: {"forms": [{"xform": "FORM.xml", "variants": [{
//          "answers": [[path, value], ...],   1-based repeat positions
//                                              (/data/a/kids[2]/name)
//          "items": [[repeat path, n], ...],   then that many items exactly
//          "hidden": [[path, value], ...]      values no question asks (record
//                                              references), written into the
//                                              instance as entities fill them
//        A follow-up's case is picked from its case list (the file of that
//        name in CASESYNC_TEST_ODK_MEDIA, else one case) when no answer
//        names it.
//        }, ...]}, ...]}
//
// Prints {"form", "loaded": node count} (or "failed": why) per form, then one JSON line per
// variant, in order: {"form", "variant", "valid"
// (the engine's own verdict: no required or constraint violation among the
// questions that apply), "violations": ["path: condition"], "unset":
// ["path: why"] (answers the engine would not take, such as one to a
// question that does not apply), "xml" (the instance it submits)}.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const modules = process.env.CASESYNC_TEST_ODK_NODE_MODULES;
if (!modules) { console.error('CASESYNC_TEST_ODK_NODE_MODULES is not set'); process.exit(2); }
const require = createRequire(modules.replace(/\/?$/, '/'));

const { JSDOM } = require('jsdom');
const { window } = new JSDOM('');
Object.assign(globalThis, { DOMParser: window.DOMParser, Node: window.Node, document: window.document });
globalThis.__dirname = process.cwd();   // web-tree-sitter's Node branch reads __dirname
const { loadForm } = await import(require.resolve('@getodk/xforms-engine'));

// Form attachments (a follow-up's case list, jr://file-csv/cases.csv): the
// file of that name in CASESYNC_TEST_ODK_MEDIA, else a list of one case,
// which `fill` picks when the answers name none (a follow-up is always
// about a case).
const ONE_CASE = '00000000-0000-4000-8000-00000000ca5e';
const attachments = {
  fetchFormAttachment: async (url) => {
    const name = String(url).split('/').pop();
    const dir = process.env.CASESYNC_TEST_ODK_MEDIA;
    let text = `name,label,__version\n${ONE_CASE},Case 1,1\n`;
    try { if (dir) text = readFileSync(`${dir}/${name}`, 'utf8'); } catch { /* the one-case list */ }
    return new Response(text, { status: 200, headers: { 'Content-Type': 'text/csv' } });
  },
};

const all = (n) => [n, ...(n.currentState.children ?? []).flatMap(all)];

/// Nodes by reference; a repeat's part is indexed again after it changes.
function index(root, map = new Map()) {
  for (const n of all(root)) map.set(n.currentState.reference, n);
  return map;
}

function fill(form, variant) {
  const nodes = index(form.root);
  const rangeOf = (ref) => {
    const range = nodes.get(ref);
    return range && range.nodeType.startsWith('repeat-range') ? range : null;
  };
  const set = ([path, value]) => {
    // Every repeat on the way gets the items the path needs.
    const steps = path.split('/');
    for (let i = 2; i < steps.length; i++) {
      const m = steps[i].match(/^(.*)\[(\d+)\]$/);
      if (!m) continue;
      const range = rangeOf(steps.slice(0, i).join('/') + '/' + m[1]);
      if (!range) return `${path}: no repeat ${m[1]}`;
      if (!range.currentState.relevant) return `${path}: not relevant`;
      if (range.currentState.children.length < Number(m[2])) {
        while (range.currentState.children.length < Number(m[2])) range.addInstances();
        index(range, nodes);
      }
    }
    const node = nodes.get(path);
    if (!node) return `${path}: no such question`;
    if (!node.currentState.relevant) return `${path}: not relevant`;
    if (node.nodeType === 'select') {
      const values = String(value).split(' ').filter(Boolean);
      if (node.definition.bodyElement.type === 'select') node.selectValues(values); else node.selectValue(values[0]);
    } else if (node.nodeType === 'upload') {
      node.setValue(new File([new Uint8Array([1, 2, 3])], String(value)));
    } else if (node.valueType === 'int' || node.valueType === 'decimal') {
      node.setValue(Number(value));
    } else {
      node.setValue(String(value));
    }
    return null;
  };
  // A question may apply only after a later answer (a rule naming a field
  // further down): answer in form order, then again what did not apply yet.
  const pick = '/data/meta/case_id';
  let pending = nodes.get(pick)?.nodeType === 'select' && !variant.answers.some(([path]) => path === pick)
    ? [[pick, ONE_CASE], ...variant.answers]
    : variant.answers;
  for (let pass = 0; pass < 5 && pending.length; pass++) {
    const left = pending.filter((answer) => set(answer) !== null);
    if (left.length === pending.length) break;
    pending = left;
  }
  const unset = [];
  for (const answer of pending) { const why = set(answer); if (why) unset.push(why); }
  for (const [path, n] of variant.items ?? []) {
    const range = rangeOf(path);
    if (!range) { unset.push(`${path}: no repeat`); continue; }
    if (!range.currentState.relevant) { unset.push(`${path}: not relevant`); continue; }
    while (range.currentState.children.length > n) range.removeInstances(range.currentState.children.length - 1, 1);
    while (range.currentState.children.length < n) range.addInstances();
  }
  return unset;
}

/// Writes `hidden` values into the submitted instance; an element that is
/// not there (it does not apply) stays out.
function patch(xml, hidden) {
  if (!hidden?.length) return xml;
  const doc = new window.DOMParser().parseFromString(xml, 'text/xml');
  for (const [path, value] of hidden) {
    let el = doc.documentElement;
    for (const step of path.split('/').slice(2)) {
      const m = step.match(/^(.*)\[(\d+)\]$/);
      const [name, n] = m ? [m[1], Number(m[2])] : [step, 1];
      el = el && [...el.children].filter((c) => c.localName === name)[n - 1];
    }
    if (el) el.textContent = value;
  }
  return new window.XMLSerializer().serializeToString(doc);
}

const jobs = JSON.parse(readFileSync(process.argv[2], 'utf8'));
for (const [f, job] of jobs.forms.entries()) {
  let loaded;
  try {
    loaded = await loadForm(readFileSync(job.xform, 'utf8'), attachments);
    if (loaded.status === 'failure') throw loaded.error ?? new Error('does not load');
    console.log(JSON.stringify({ form: f, loaded: all(loaded.createInstance().root).length }));
  } catch (e) {
    console.log(JSON.stringify({ form: f, failed: String(e?.stack ?? e) }));
    continue;
  }
  for (const [v, variant] of job.variants.entries()) {
    const { root } = loaded.createInstance();
    const unset = fill({ root }, variant);
    const payload = await root.prepareInstancePayload();
    const violations = (payload.violations ?? []).map((x) =>
      `${x.reference ?? ''}: ${x.violation?.condition ?? JSON.stringify(x)}`);
    const xml = patch(await payload.data[0].get('xml_submission_file').text(), variant.hidden);
    console.log(JSON.stringify({ form: f, variant: v, valid: payload.status === 'ready', violations, unset, xml }));
  }
}
