// An independent ODK Collect-style encryptor (ODK XForms "Encryption";
// Collect's EncryptionUtils), written for casesync's interop test
// (tests/it/odk_crypto.rs) with node:crypto only: the server must open what
// this writes. Usage:
//   node collect-encrypt.mjs SPKI_DER_FILE FORM_ID VERSION|- INSTANCE.xml OUT_DIR [MEDIA...]
// Writes OUT_DIR/manifest.xml (the xml_submission_file part) and one
// OUT_DIR/<name>.enc per file: media in the order given, the instance last.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const [spkiFile, formId, versionArg, instanceFile, outDir, ...mediaFiles] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: collect-encrypt.mjs SPKI_DER_FILE FORM_ID VERSION|- INSTANCE.xml OUT_DIR [MEDIA...]');
  process.exit(2);
}
const version = versionArg === '-' ? null : versionArg;
const publicKey = crypto.createPublicKey({ key: fs.readFileSync(spkiFile), format: 'der', type: 'spki' });
const instance = fs.readFileSync(instanceFile);
const instanceId = /<(?:[A-Za-z_][\w.-]*:)?instanceID>\s*([^<\s]+)\s*</.exec(instance.toString('utf8'))[1];

// RSA-OAEP, SHA-256 for the label hash and for MGF1 (node uses oaepHash for both).
const rsaWrap = (bytes) =>
  crypto.publicEncrypt({ key: publicKey, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, bytes);
const md5 = (bytes) => crypto.createHash('md5').update(bytes).digest();

const symmetricKey = crypto.randomBytes(32);
const wrappedKey = rsaWrap(symmetricKey).toString('base64');
const ivSeed = md5(Buffer.concat([Buffer.from(instanceId, 'utf8'), symmetricKey]));

const files = mediaFiles.map((f) => ({ name: path.basename(f), plain: fs.readFileSync(f) }));
files.push({ name: 'submission.xml', plain: instance });
fs.mkdirSync(outDir, { recursive: true });
const signed = [formId, ...(version === null ? [] : [version]), wrappedKey, instanceId];
files.forEach((file, index) => {
  ivSeed[index % 16] = (ivSeed[index % 16] + 1) % 256; // increments accumulate from file to file
  // Node's aes-256-cfb is CFB128 and pads with PKCS#7 by default.
  const cipher = crypto.createCipheriv('aes-256-cfb', symmetricKey, Buffer.from(ivSeed));
  const padLength = 16 - (file.plain.length % 16);
  const padded = Buffer.concat([file.plain, Buffer.alloc(padLength, padLength)]);
  // CFB is a stream mode, so node adds no padding of its own: pad by hand.
  fs.writeFileSync(path.join(outDir, `${file.name}.enc`), Buffer.concat([cipher.update(padded), cipher.final()]));
  signed.push(`${file.name}::${md5(file.plain).toString('hex')}`);
});
const signature = rsaWrap(md5(Buffer.from(signed.map((line) => line + '\n').join(''), 'utf8'))).toString('base64');

const escapeXml = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
// Enketo's namespace and another element order than Collect's, on purpose:
// the server must match by local name in any order.
const manifest =
  `<?xml version="1.0" encoding="UTF-8"?>\n<data xmlns="http://opendatakit.org/submissions" encrypted="yes" id="${escapeXml(formId)}"` +
  (version === null ? '' : ` version="${escapeXml(version)}"`) + '>\n' +
  ` <meta xmlns="http://openrosa.org/xforms"><instanceID>${escapeXml(instanceId)}</instanceID></meta>\n` +
  ` <base64EncryptedKey>${wrappedKey}</base64EncryptedKey>\n` +
  files.slice(0, -1).map((f) => ` <media><file>${escapeXml(f.name)}.enc</file></media>\n`).join('') +
  ` <encryptedXmlFile>submission.xml.enc</encryptedXmlFile>\n` +
  ` <base64EncryptedElementSignature>${signature}</base64EncryptedElementSignature>\n</data>\n`;
fs.writeFileSync(path.join(outDir, 'manifest.xml'), manifest);
