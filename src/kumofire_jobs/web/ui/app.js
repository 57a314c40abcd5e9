// The dashboard: hash routes (#/, #/runs, #/runs/<id>, #/schedules, #/jobs), the token and
// confirm dialogs, toasts, keyboard shortcuts and the refresh of what is on screen.

import { ApiError, onTokenNeeded, setToken, token } from "./api.js";
import { h } from "./dom.js";
import { jobList } from "./jobs.js";
import { overview } from "./overview.js";
import { runView } from "./run.js";
import { runList } from "./runs.js";
import { scheduleList } from "./schedules.js";

const main = document.getElementById("main");
const $ = (id) => document.getElementById(id);

// --- routes ----------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const params = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { view: "overview", load: () => overview(params, app) };
  if (parts[0] === "runs" && parts.length === 2)
    return { view: "runs", load: () => runView(parts[1], app) };
  if (parts[0] === "runs") return { view: "runs", load: () => runList(params, app) };
  if (parts[0] === "schedules") return { view: "schedules", load: () => scheduleList(params, app) };
  if (parts[0] === "jobs") return { view: "jobs", load: () => jobList(params, app) };
  return { view: "", load: async () => [h("h1", null, "Not found"), h("p", null, "No such view.")] };
}

let rendering = 0; // the latest render wins when several overlap
let liveTimer = null;

async function render({ quiet = false } = {}) {
  const mine = ++rendering;
  clearTimeout(liveTimer);
  const { view, load } = route();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!quiet) main.setAttribute("aria-busy", "true");
  let result;
  try {
    result = await load();
  } catch (error) {
    if (mine !== rendering) return;
    main.removeAttribute("aria-busy");
    // A refresh keeps what it showed through a passing error, not through a 404: what the
    // view shows is gone (deleted elsewhere), and its buttons would act on nothing.
    const gone = error instanceof ApiError && error.status === 404;
    if (quiet && !gone) {
      toast(messageOf(error), "error");
      return;
    }
    main.replaceChildren(errorPanel(error));
    return;
  }
  if (mine !== rendering) return;
  const { title, body, live } = Array.isArray(result) ? { body: result } : result;
  const focused = document.activeElement;
  const keep = quiet && focused && main.contains(focused) && focused.matches("input, select");
  if (keep) return scheduleLive(interval(view, live)); // never yank a field being typed in
  const selected = selectedIndex();
  const opened = [...main.querySelectorAll("details")].map((d) => d.open);
  main.removeAttribute("aria-busy");
  main.replaceChildren(...body.flat().filter(Boolean));
  if (quiet) main.querySelectorAll("details").forEach((d, i) => (d.open = d.open || opened[i]));
  document.title = `${title || viewTitle(view)} · Kumofire Jobs`;
  if (quiet && selected >= 0) select(selected, false);
  scheduleLive(interval(view, live));
}

// A view refreshes on its own when it asks to (a run until it finishes: one row read), or
// every 10 s when Live is on. Live is off unless switched on: counting runs reads every row
// of the table on D1, and a tab left open all day would count them thousands of times.
const LIVE_KEY = "kumofire-jobs-live";
const LIVE_MS = 10_000;

function interval(view, asked) {
  const live = sessionStorage.getItem(LIVE_KEY) === "on";
  return asked || (live && view ? LIVE_MS : 0);
}

function showLive() {
  const on = sessionStorage.getItem(LIVE_KEY) === "on";
  $("live").setAttribute("aria-pressed", String(on));
  $("live").title = on ? "Refreshing every 10 s (l to stop)" : "Refresh every 10 s (l)";
}

function toggleLive() {
  const on = sessionStorage.getItem(LIVE_KEY) === "on";
  sessionStorage.setItem(LIVE_KEY, on ? "off" : "on");
  showLive();
  render({ quiet: true });
}

function viewTitle(view) {
  return { overview: "Overview", runs: "Runs", schedules: "Schedules", jobs: "Jobs" }[view] || "";
}

function scheduleLive(ms) {
  clearTimeout(liveTimer);
  if (ms) {
    liveTimer = setTimeout(() => {
      if (document.hidden || document.querySelector("dialog[open]")) scheduleLive(ms);
      else render({ quiet: true });
    }, ms);
  }
}

function messageOf(error) {
  if (error instanceof ApiError) return `${error.message} (${error.status} ${error.code})`;
  return error && error.message ? error.message : String(error);
}

function errorPanel(error) {
  const disabled = error instanceof ApiError && error.code === "api_disabled";
  return h(
    "div.panel.error-panel",
    { role: "alert" },
    h("h1", null, disabled ? "The API is disabled" : "Could not load this view"),
    h("p", null, messageOf(error)),
    disabled
      ? h(
          "p",
          null,
          "Set the Worker's KUMOFIRE_API_TOKEN secret (",
          h("code", null, "npx wrangler secret put KUMOFIRE_API_TOKEN"),
          "), then reload.",
        )
      : null,
    h("button", { type: "button", onclick: () => render() }, "Try again"),
  );
}

// --- actions, toasts, dialogs ----------------------------------------------------------------

function toast(text, kind = "ok") {
  const node = h(`div.toast.${kind}`, null, text);
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 4000);
}

const app = {
  go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  },
  // Runs an action, says how it went, and shows the view again (unless it moved elsewhere).
  async act(perform, again = true) {
    try {
      toast(await perform());
    } catch (error) {
      toast(messageOf(error), "error");
    }
    if (again) await render({ quiet: true });
  },
  confirm(title, text, verb) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = verb;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-ok").focus();
    });
  },
};

// Asked only when the API answers 401: true once a token is given.
onTokenNeeded((hadToken) => {
  const dialog = $("token-dialog");
  const input = $("token-input");
  $("token-why").textContent = hadToken
    ? "The API refused this token: type the current one."
    : "This API needs a bearer token (the KUMOFIRE_API_TOKEN it was started with).";
  input.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const given = dialog.returnValue === "ok" && input.value.trim();
        if (given) setToken(given);
        $("forget").hidden = !token();
        resolve(Boolean(given));
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
});

// --- keyboard --------------------------------------------------------------------------------

function rows() {
  return [...main.querySelectorAll("tr[data-href]")];
}

function selectedIndex() {
  return rows().findIndex((row) => row.classList.contains("selected"));
}

function select(index, scroll = true) {
  const all = rows();
  if (!all.length) return;
  const clamped = Math.max(0, Math.min(all.length - 1, index));
  all.forEach((row, i) => row.classList.toggle("selected", i === clamped));
  if (scroll) all[clamped].scrollIntoView({ block: "nearest" });
}

const GO = { o: "#/", r: "#/runs", s: "#/schedules", j: "#/jobs" };
let pendingG = 0;

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  const typing = target.matches && target.matches("input, select, textarea, [contenteditable]");
  if (typing) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (document.querySelector("dialog[open]")) return;
  const key = event.key;
  if (pendingG && Date.now() - pendingG < 1500 && GO[key]) {
    pendingG = 0;
    event.preventDefault();
    app.go(GO[key]);
    return;
  }
  pendingG = 0;
  if (key === "g") pendingG = Date.now();
  else if (key === "/") {
    const filter = main.querySelector("[data-filter]");
    if (filter) {
      event.preventDefault();
      filter.focus();
      filter.select();
    }
  } else if (key === "j") select(selectedIndex() + 1);
  else if (key === "k") select(selectedIndex() < 0 ? 0 : selectedIndex() - 1);
  else if ((key === "Enter" || key === "o") && selectedIndex() >= 0 && !target.closest("a, button, summary")) {
    event.preventDefault();
    location.hash = rows()[selectedIndex()].dataset.href;
  } else if (key === "n" || key === "p") {
    const link = main.querySelector(`[data-page="${key === "n" ? "next" : "prev"}"]`);
    if (link) link.click();
  } else if (key === "r") render({ quiet: true });
  else if (key === "l") toggleLive();
  else if (key === "?") $("help-dialog").showModal();
});

// A click on a row opens it, unless the click was on a link or a button inside it.
main.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-href]");
  if (!row || event.target.closest("a, button, summary, details, input, select")) return;
  if (window.getSelection && String(window.getSelection())) return; // selecting text
  location.hash = row.dataset.href;
});

$("refresh").addEventListener("click", () => render({ quiet: true }));
$("live").addEventListener("click", toggleLive);
showLive();
$("help").addEventListener("click", () => $("help-dialog").showModal());
$("forget").addEventListener("click", () => {
  setToken(null);
  $("forget").hidden = true;
  toast("Token forgotten");
  render();
});
$("forget").hidden = !token();

window.addEventListener("hashchange", () => {
  render();
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
});
render();
