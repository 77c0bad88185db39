// Start-up: sign in (or resume this tab's session) and open the team or the operator view.

import { GatewayError, api, session, whenUnauthorized } from "./api.js";
import { $, show } from "./dom.js";
import { openOperator } from "./operator.js";
import { openTeam } from "./team.js";

const CHECKS = { team: "/v1/console/usage", operator: "/admin/upstreams" };

function signOut(message = "") {
  session.end();
  show($("#who"), false);
  show($("#team-view"), false);
  show($("#operator-view"), false);
  show($("#sign-in-view"), true);
  $("#sign-in-error").textContent = message;
  // A fresh page drops every timer and every image of the signed-out session.
  if (!message) location.replace("/console");
}

async function open(role) {
  show($("#sign-in-view"), false);
  show($("#who"), true);
  if (role === "operator") {
    $("#who-name").textContent = "Operator";
    show($("#operator-view"), true);
    await openOperator();
  } else {
    show($("#team-view"), true);
    await openTeam((team) => {
      $("#who-name").textContent = `Team ${team}`;
    });
  }
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#key");
  const key = input.value.trim();
  const role = $("#sign-in").querySelector("input[name=role]:checked").value;
  const error = $("#sign-in-error");
  error.textContent = "";
  try {
    await api(CHECKS[role], { key });
  } catch (problem) {
    error.textContent =
      problem instanceof GatewayError && problem.status === 401
        ? `That is not ${role === "team" ? "a team's client key" : "an admin key"} of this gateway.`
        : problem.message;
    return;
  }
  input.value = "";
  session.start(key, role);
  await open(role);
}

whenUnauthorized(() => signOut("Your key is no longer accepted; sign in again."));
$("#sign-in").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", () => signOut());
if (session.key && session.role in CHECKS) open(session.role);
