// The team's results, newest first, a page at a time, and the viewer for one of them.

import { api, withQuery } from "./api.js";
import { $, bytes, clock, h, show, when } from "./dom.js";

const PAGE = 24;

export class Gallery {
  constructor({ onRefine, onPick }) {
    this.onRefine = onRefine;
    this.onPick = onPick;
    this.next = null;
    this.viewer = new Viewer({ onRefine, onPick });
    $("#gallery-more").addEventListener("click", () => this.loadMore());
    $("#gallery-refresh").addEventListener("click", () => this.reload());
  }

  async reload() {
    $("#gallery").replaceChildren();
    this.next = null;
    await this.load(null);
  }

  async loadMore() {
    if (this.next !== null) await this.load(this.next);
  }

  async load(before) {
    const page = await api(withQuery("/v1/console/images", { before, limit: PAGE }));
    $("#gallery").append(...page.data.map((image) => this.tile(image)));
    this.next = page.next_before;
    show($("#gallery-more"), this.next !== null);
    show($("#gallery-empty"), $("#gallery").children.length === 0);
  }

  tile(image) {
    const dims = h("span", { class: "dims" });
    const img = h("img", {
      src: image.url,
      alt: image.prompt || `${image.model} result`,
      loading: "lazy",
      onload: () => {
        dims.textContent = `${img.naturalWidth}×${img.naturalHeight}`;
      },
    });
    return h(
      "figure",
      { class: "tile", "data-id": image.id },
      h(
        "button",
        { type: "button", class: "thumb", title: "Open", onclick: () => this.viewer.open(image) },
        img,
      ),
      h(
        "figcaption",
        {},
        h("b", {}, image.model),
        h("span", { title: clock(image.created) }, when(image.created)),
        dims,
        h("span", {}, bytes(image.size)),
        image.seed === null ? null : h("span", { class: "seed" }, `seed ${image.seed}`),
      ),
      h(
        "div",
        { class: "actions" },
        h(
          "button",
          { type: "button", class: "refine", onclick: () => this.onRefine(image) },
          "Refine",
        ),
        h(
          "button",
          {
            type: "button",
            class: "quiet pick",
            title: "Use as a reference image in the playground",
            onclick: () => this.onPick(image),
          },
          "+ Reference",
        ),
      ),
    );
  }
}

class Viewer {
  constructor({ onRefine, onPick }) {
    this.dialog = $("#viewer");
    this.image = null;
    $("#viewer-close").addEventListener("click", () => this.dialog.close());
    $("#viewer-copy").addEventListener("click", () => this.copy());
    $("#viewer-link").addEventListener("focus", (event) => event.target.select());
    $("#viewer-refine").addEventListener("click", () => {
      this.dialog.close();
      onRefine(this.image);
    });
    $("#viewer-pick").addEventListener("click", () => {
      this.dialog.close();
      onPick(this.image);
    });
  }

  open(image) {
    this.image = image;
    $("#viewer-image").src = image.url;
    $("#viewer-image").alt = image.prompt || `${image.model} result`;
    const facts = [
      ["Model", image.model],
      ["Created", clock(image.created)],
      ["Size", bytes(image.size)],
      ["Seed", image.seed === null ? "—" : String(image.seed)],
      ["Request", image.request_id],
    ];
    $("#viewer-meta").replaceChildren(
      ...facts.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]),
    );
    $("#viewer-prompt").textContent = image.prompt || "";
    show($("#viewer-prompt"), Boolean(image.prompt));
    $("#viewer-link").value = image.url;
    $("#viewer-open").href = image.url;
    $("#viewer-copy").textContent = "Copy link";
    this.dialog.showModal();
  }

  async copy() {
    const button = $("#viewer-copy");
    try {
      await navigator.clipboard.writeText(this.image.url);
      button.textContent = "Copied";
    } catch {
      $("#viewer-link").select();
      button.textContent = "Press Ctrl+C";
    }
  }
}
