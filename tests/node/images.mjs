// Drives flux-gateway with the official OpenAI Node SDK; run by tests/test_node_sdk.py.
//
//   OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-... \
//   IMAGE_PNG=a.png IMAGE_JPEG=b.jpg IMAGE_WEBP=c.webp node images.mjs <scenario>
//
// Prints the SDK's result as JSON on stdout, or for an API error
// {"error": {"status", "type", "code", "param", "message"}} (exit code 0 either way);
// anything else (bad usage, connection error) exits non-zero with the reason on stderr.
import { readFile } from 'node:fs/promises';
import OpenAI, { toFile } from 'openai';

const MODEL = 'flux-2-pro';

// Without `octet`: each file labelled with its real type and extension. With it: labelled
// application/octet-stream and named "upload" (as raw bytes), so only sniffing can type them.
async function files(octet = false) {
  const read = (name) => {
    const path = process.env[name];
    if (!path) throw new Error(`${name} is not set`);
    return readFile(path);
  };
  const [png, jpeg, webp] = await Promise.all([read('IMAGE_PNG'), read('IMAGE_JPEG'), read('IMAGE_WEBP')]);
  const file = (data, name, type) =>
    octet ? toFile(data, 'upload', { type: 'application/octet-stream' }) : toFile(data, name, { type });
  return Promise.all([
    file(png, 'a.png', 'image/png'),
    file(jpeg, 'b.jpg', 'image/jpeg'),
    file(webp, 'c.webp', 'image/webp'),
  ]);
}

const scenarios = {
  generate: (client) =>
    client.images.generate({
      model: MODEL,
      prompt: 'a lighthouse at dusk',
      size: '1536x1024',
      seed: 42,
      input_image: 'https://example.com/a.png',
      input_image_2: 'https://example.com/b.png',
      output_format: 'png',
    }),
  edit: async (client) =>
    client.images.edit({ model: MODEL, prompt: 'combine the three', image: await files(), seed: 7 }),
  'edit-octet': async (client) =>
    client.images.edit({
      model: MODEL,
      prompt: 'combine the three',
      image: await files(true),
      seed: 7,
    }),
  b64: (client) =>
    client.images.generate({ model: MODEL, prompt: 'inline please', response_format: 'b64_json' }),
  bad: (client) => client.images.generate({ model: MODEL, prompt: 'too many steps', steps: 20 }),
};

const name = process.argv[2];
const scenario = scenarios[name];
if (!scenario) {
  console.error(`usage: node images.mjs <${Object.keys(scenarios).join('|')}>`);
  process.exit(2);
}
if (!process.env.OPENAI_BASE_URL || !process.env.OPENAI_API_KEY) {
  console.error('OPENAI_BASE_URL and OPENAI_API_KEY must be set');
  process.exit(2);
}

const client = new OpenAI({ maxRetries: 0, timeout: 60_000 });
try {
  console.log(JSON.stringify(await scenario(client)));
} catch (err) {
  if (!(err instanceof OpenAI.APIError) || err.status === undefined) throw err;
  const { status, type, code, param, message } = err;
  console.log(JSON.stringify({ error: { status, type, code, param, message } }));
}
