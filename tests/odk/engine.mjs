// @getodk/xforms-engine (ODK Web Forms' engine) headless under Node, for
// tests/it/odk_xform.rs. Node resolves packages from NODE_PATH only for
// CommonJS, so the engine is imported by its path under the directory the
// tests give in CASESYNC_TEST_ODK_NODE_MODULES.
//
//   node engine.mjs load FORM.xml...      loads each form; prints "ok NAME" or
//                                          "FAIL NAME: why"; exits 1 on a failure
//   node engine.mjs fill FORM.xml ANSWERS.json
//                                          ANSWERS: [[path, value], ...] with
//                                          1-based repeat positions
//                                          (/data/a/kids[2]/name); prints the
//                                          submission XML, violations to stderr
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.CASESYNC_TEST_ODK_NODE_MODULES;
if (!modules) { console.error('CASESYNC_TEST_ODK_NODE_MODULES is not set'); process.exit(2); }
const load = async (name) => import(pathToFileURL(join(modules, name, JSON.parse(
  readFileSync(join(modules, name, 'package.json'), 'utf8')).exports?.['.']?.import
  ?? JSON.parse(readFileSync(join(modules, name, 'package.json'), 'utf8')).main)).href);

const { JSDOM } = await load('jsdom');
const { window } = new JSDOM('');
Object.assign(globalThis, { DOMParser: window.DOMParser, Node: window.Node, document: window.document });
globalThis.__dirname = process.cwd();   // web-tree-sitter's Node branch reads __dirname
const { createInstance } = await load('@getodk/xforms-engine');

const [command, ...args] = process.argv.slice(2);

const all = (n) => [n, ...(n.currentState.children ?? []).flatMap(all)];

if (command === 'load') {
  let failed = 0;
  for (const file of args) {
    try {
      const form = await createInstance(readFileSync(file, 'utf8'));
      const count = all(form.root).length;
      console.log(`ok ${file} (${count} nodes)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${file}: ${e?.stack ?? e}`);
    }
  }
  process.exit(failed ? 1 : 0);
} else if (command === 'fill') {
  const [file, answersFile] = args;
  const form = await createInstance(readFileSync(file, 'utf8'));
  const answers = JSON.parse(readFileSync(answersFile, 'utf8'));
  // "/data/a[2]/b" → the engine's reference of that node.
  const find = (ref) => all(form.root).find((n) => n.currentState.reference === ref);
  for (const [path, value] of answers) {
    // Make every repeat on the way hold enough items.
    const steps = path.split('/');
    for (let i = 1; i < steps.length; i++) {
      const m = steps[i].match(/^(.*)\[(\d+)\]$/);
      if (!m) continue;
      const rangeRef = steps.slice(0, i).join('/').replace(/\[\d+\]$/, '') + '/' + m[1];
      const parentRef = steps.slice(0, i).join('/') + '/' + m[1];
      const range = all(form.root).find((n) => n.nodeType === 'repeat-range:uncontrolled' || n.nodeType === 'repeat-range:controlled'
        ? n.currentState.reference === parentRef || n.currentState.reference === rangeRef : false);
      if (!range) throw new Error(`no repeat at ${parentRef}`);
      while (range.currentState.children.length < Number(m[2])) range.addInstances();
    }
    const node = find(path);
    if (!node) throw new Error(`no node ${path}`);
    if (node.nodeType === 'select-node' || node.nodeType === 'select') {
      const values = String(value).split(' ').filter(Boolean);
      if (node.selectValues) node.selectValues(values); else node.selectValue(values[0]);
    } else if (typeof node.selectValue === 'function' && node.nodeType !== 'input') {
      node.selectValue(String(value));
    } else {
      node.setValue(value);
    }
  }
  const payload = await form.root.prepareInstancePayload();
  if (payload.violations?.length) console.error('violations:', JSON.stringify(payload.violations.map((v) => v.reference ?? v)));
  console.log(await payload.data[0].get('xml_submission_file').text());
} else {
  console.error('usage: engine.mjs load FORM.xml... | fill FORM.xml ANSWERS.json');
  process.exit(2);
}
