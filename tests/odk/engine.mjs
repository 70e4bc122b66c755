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
import { createRequire } from 'node:module';

const modules = process.env.CASESYNC_TEST_ODK_NODE_MODULES;
if (!modules) { console.error('CASESYNC_TEST_ODK_NODE_MODULES is not set'); process.exit(2); }
const require = createRequire(modules.replace(/\/?$/, '/'));

const { JSDOM } = require('jsdom');
const { window } = new JSDOM('');
Object.assign(globalThis, { DOMParser: window.DOMParser, Node: window.Node, document: window.document });
globalThis.__dirname = process.cwd();   // web-tree-sitter's Node branch reads __dirname
const { createInstance } = await import(require.resolve('@getodk/xforms-engine'));

// Form attachments (a follow-up's case list, jr://file-csv/cases.csv): the
// file of that name in CASESYNC_TEST_ODK_MEDIA, else a list of one case,
// which `fill` picks when the answers name none (a follow-up is always
// about a case).
const ONE_CASE = '00000000-0000-4000-8000-00000000ca5e';
const attachments = {
  form: {
    fetchFormAttachment: async (url) => {
      const name = String(url).split('/').pop();
      const dir = process.env.CASESYNC_TEST_ODK_MEDIA;
      let text = `name,label,__version\n${ONE_CASE},Case 1,1\n`;
      try { if (dir) text = readFileSync(`${dir}/${name}`, 'utf8'); } catch { /* the empty list */ }
      return new Response(text, { status: 200, headers: { 'Content-Type': 'text/csv' } });
    },
  },
};

const [command, ...args] = process.argv.slice(2);

const all = (n) => [n, ...(n.currentState.children ?? []).flatMap(all)];

if (command === 'load') {
  let failed = 0;
  for (const file of args) {
    try {
      const form = await createInstance(readFileSync(file, 'utf8'), attachments);
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
  const form = await createInstance(readFileSync(file, 'utf8'), attachments);
  const answers = JSON.parse(readFileSync(answersFile, 'utf8'));
  const find = (ref) => all(form.root).find((n) => n.currentState.reference === ref);
  const problems = [];
  const set = ([path, value]) => {
    // Every repeat on the way gets the items the path needs.
    const steps = path.split('/');
    for (let i = 2; i < steps.length; i++) {
      const m = steps[i].match(/^(.*)\[(\d+)\]$/);
      if (!m) continue;
      const range = find(steps.slice(0, i).join('/') + '/' + m[1]);
      if (!range || !range.nodeType.startsWith('repeat-range')) return `${path}: no repeat ${m[1]}`;
      if (!range.currentState.relevant) return `${path}: not relevant`;
      while (range.currentState.children.length < Number(m[2])) range.addInstances();
    }
    const node = find(path);
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
  let pending = find(pick)?.nodeType === 'select' && !answers.some(([path]) => path === pick)
    ? [[pick, ONE_CASE], ...answers]
    : answers;
  for (let pass = 0; pass < 5 && pending.length; pass++) {
    const left = pending.filter((answer) => set(answer) !== null);
    if (left.length === pending.length) break;
    pending = left;
  }
  for (const answer of pending) { const why = set(answer); if (why) problems.push(why); }
  const payload = await form.root.prepareInstancePayload();
  for (const v of payload.violations ?? []) problems.push(`${v.reference ?? ''}: ${v.violation?.condition ?? JSON.stringify(v)}`);
  for (const p of problems) console.error(p);
  console.log(await payload.data[0].get('xml_submission_file').text());
  process.exit(problems.length ? 3 : 0);
} else {
  console.error('usage: engine.mjs load FORM.xml... | fill FORM.xml ANSWERS.json');
  process.exit(2);
}
