// The playground: prompt, model, reference images and the model's own parameters, sent to
// /v1/images/generations exactly as an API client would send them, as an async job
// (`Prefer: respond-async`): the page polls the job and shows its status until it ends, so a
// long generation never depends on one held connection.

import { api, GatewayError } from "./api.js";
import { $, h, show } from "./dom.js";

const REFERENCE_KEYS = ["input_image", ...[2, 3, 4, 5, 6, 7, 8].map((i) => `input_image_${i}`)];
const SIZES = [
  ["", "Model default"],
  ["1024x1024", "1:1 square"],
  ["1536x1024", "3:2 landscape"],
  ["1024x1536", "2:3 portrait"],
  ["1024x768", "4:3"],
  ["768x1024", "3:4"],
  ["1920x1080", "16:9 wide"],
  ["1080x1920", "9:16 tall"],
  ["2016x864", "21:9 cinema"],
];
const MAX_COUNT = 4;
const POLL_MS = 500;
const STATUS_WORDS = { queued: "Queued", running: "Generating" };

/** The job's answer once it has ended: its result, or its error thrown as the API's. */
async function jobResult(job, onStatus) {
  let current = job;
  while (current.status === "queued" || current.status === "running") {
    onStatus(current.status);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    current = await api(`/v1/images/jobs/${encodeURIComponent(current.id)}`);
  }
  if (current.status === "failed") {
    throw new GatewayError(current.error.status, { error: current.error });
  }
  return current.result;
}

/** What a model takes on the upstreams that serve it: the most any of them allows. */
export function limitsOf(model) {
  const flux = model.flux;
  const kinds = flux.served_by.map((kind) => flux.upstream_kinds[kind]).filter(Boolean);
  return {
    family: flux.family,
    maxImages: Math.max(0, ...kinds.map((k) => k.max_reference_images)),
    safetyMax: Math.max(0, ...kinds.map((k) => k.safety_tolerance[1])),
    formats: [...new Set(kinds.flatMap((k) => k.output_formats))],
    steps: flux.steps,
    guidance: flux.guidance,
  };
}

/** The image type from its first bytes, as the gateway decides it (PNG, JPEG, WebP). */
function sniff(bytes) {
  const starts = (...values) => values.every((value, i) => bytes[i] === value);
  if (starts(0x89, 0x50, 0x4e, 0x47)) return "image/png";
  if (starts(0xff, 0xd8, 0xff)) return "image/jpeg";
  const text = String.fromCharCode(...bytes.slice(0, 12));
  if (text.startsWith("RIFF") && text.slice(8, 12) === "WEBP") return "image/webp";
  return null;
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function range(pair) {
  return `${pair[0]}–${pair[1]}`;
}

export class Playground {
  constructor(models, { onGenerated }) {
    this.models = new Map(models.map((model) => [model.id, model]));
    this.onGenerated = onGenerated;
    this.refs = [];
    this.busy = false;
    $("#model").replaceChildren(
      ...models.map((model) => h("option", { value: model.id }, model.id)),
    );
    $("#size").replaceChildren(...SIZES.map(([value, label]) => h("option", { value }, label)));
    $("#model").addEventListener("change", () => this.modelChanged());
    $("#ref-files").addEventListener("change", (event) => this.addFiles(event.target));
    $("#playground").addEventListener("submit", (event) => {
      event.preventDefault();
      this.generate();
    });
    this.modelChanged();
  }

  get limits() {
    return limitsOf(this.models.get($("#model").value));
  }

  modelChanged() {
    const limits = this.limits;
    const facts = [
      limits.family,
      `up to ${limits.maxImages} reference image${limits.maxImages === 1 ? "" : "s"}`,
      `safety 0–${limits.safetyMax}`,
      limits.formats.join(", "),
    ];
    if (limits.steps) facts.push(`steps ${range(limits.steps)}`);
    if (limits.guidance) facts.push(`guidance ${range(limits.guidance)}`);
    $("#model-limits").textContent = facts.join(" · ");
    for (const name of ["steps", "guidance"]) {
      const pair = limits[name];
      show($(`#${name}-field`), Boolean(pair));
      const input = $(`#${name}`);
      input.value = "";
      if (pair) {
        input.min = pair[0];
        input.max = pair[1];
        input.placeholder = range(pair);
      }
    }
    $("#safety").max = limits.safetyMax;
    $("#safety").placeholder = `0–${limits.safetyMax}, default`;
    const formats = [
      h("option", { value: "" }, "Model default"),
      ...limits.formats.map((f) => h("option", { value: f }, f)),
    ];
    $("#output-format").replaceChildren(...formats);
    this.renderRefs();
  }

  async addFiles(input) {
    const error = $("#generate-error");
    error.textContent = "";
    for (const file of input.files) {
      const buffer = new Uint8Array(await file.arrayBuffer());
      const type = sniff(buffer.slice(0, 12));
      if (type === null) {
        error.textContent = `${file.name} is not a PNG, JPEG or WebP image.`;
        continue;
      }
      const url = await dataUrl(new Blob([buffer], { type }));
      this.refs.push({ value: url, thumb: url, label: file.name });
    }
    input.value = "";
    this.renderRefs();
  }

  /** A gallery image as the next reference: sent as its durable link, which the gateway
   * reads from its own cache and inlines for the upstream. */
  addLink(image) {
    this.refs.push({ value: image.url, thumb: image.url, label: `${image.model} result` });
    this.renderRefs();
    $("#playground").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  /** Start a new request from a result: it becomes the only reference image. */
  refine(image) {
    this.refs = [];
    this.addLink(image);
    const prompt = $("#prompt");
    if (image.prompt) prompt.value = image.prompt;
    prompt.focus();
    prompt.select();
  }

  renderRefs() {
    const max = this.limits.maxImages;
    const count = $("#ref-count");
    count.textContent = `${this.refs.length} / ${max}`;
    count.classList.toggle("over", this.refs.length > max);
    const items = this.refs.map((ref, index) =>
      h(
        "li",
        { class: index < max ? "" : "over", title: ref.label },
        h("img", { src: ref.thumb, alt: ref.label }),
        h("span", { class: "key" }, REFERENCE_KEYS[index] || "too many"),
        h(
          "button",
          {
            type: "button",
            class: "remove",
            "aria-label": `Remove ${ref.label}`,
            onclick: () => {
              this.refs.splice(index, 1);
              this.renderRefs();
            },
          },
          "✕",
        ),
      ),
    );
    $("#refs").replaceChildren(...items);
  }

  body() {
    const body = { model: $("#model").value, prompt: $("#prompt").value };
    this.refs.forEach((ref, index) => {
      body[REFERENCE_KEYS[index]] = ref.value;
    });
    const numbers = {
      seed: "#seed",
      steps: "#steps",
      guidance: "#guidance",
      safety_tolerance: "#safety",
    };
    for (const [field, selector] of Object.entries(numbers)) {
      const input = $(selector);
      if (!input.closest(".field").hidden && input.value !== "") body[field] = Number(input.value);
    }
    if ($("#size").value) body.size = $("#size").value;
    if ($("#output-format").value) body.output_format = $("#output-format").value;
    const count = Number($("#count").value) || 1;
    if (count > 1) body.n = Math.min(count, MAX_COUNT);
    return body;
  }

  async generate() {
    if (this.busy) return;
    const error = $("#generate-error");
    error.textContent = "";
    const max = this.limits.maxImages;
    if (this.refs.length > max) {
      error.textContent = `${$("#model").value} takes at most ${max} reference image(s).`;
      return;
    }
    this.busy = true;
    $("#generate").disabled = true;
    const started = performance.now();
    let status = "queued";
    const tick = () => {
      $("#elapsed").textContent =
        `${STATUS_WORDS[status] || "Generating"}… ${((performance.now() - started) / 1000).toFixed(1)} s`;
    };
    tick();
    const timer = setInterval(tick, 100);
    show($("#progress"), true);
    try {
      const job = await api("/v1/images/generations", {
        method: "POST",
        body: this.body(),
        headers: { prefer: "respond-async" },
      });
      const answer = await jobResult(job, (now) => {
        status = now;
        tick();
      });
      $("#results").replaceChildren(
        ...answer.data.map((item) =>
          h(
            "a",
            { href: item.url, target: "_blank", rel: "noopener noreferrer", class: "result" },
            h("img", { src: item.url, alt: "Result" }),
          ),
        ),
      );
      await this.onGenerated(answer);
    } catch (problem) {
      error.textContent = problem.param ? `${problem.message} (${problem.param})` : problem.message;
    } finally {
      clearInterval(timer);
      show($("#progress"), false);
      $("#generate").disabled = false;
      this.busy = false;
    }
  }
}
