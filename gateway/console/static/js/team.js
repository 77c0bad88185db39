// The team view: usage meters, the playground and the gallery, wired together.

import { api } from "./api.js";
import { Gallery } from "./gallery.js";
import { Playground } from "./playground.js";
import { refreshUsage } from "./usage.js";

const USAGE_REFRESH_MS = 20000;

function allowed(models, teamModels) {
  if (teamModels.includes("*")) return models;
  return models.filter((model) => teamModels.includes(model.id));
}

export async function openTeam(named) {
  const usage = await refreshUsage();
  named(usage.team);
  const catalog = await api("/v1/models");
  let gallery = null;
  const playground = new Playground(allowed(catalog.data, usage.models), {
    onGenerated: async () => {
      await Promise.all([gallery.reload(), refreshUsage()]);
    },
  });
  gallery = new Gallery({
    onRefine: (image) => playground.refine(image),
    onPick: (image) => playground.addLink(image),
  });
  await gallery.reload();
  setInterval(() => refreshUsage().catch(() => {}), USAGE_REFRESH_MS);
}
