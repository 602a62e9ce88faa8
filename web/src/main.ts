// The console's shell: the bearer token field and the three pages, chosen
// by the URL's fragment (#/rooms, #/rooms/<room>, #/history,
// #/history/<session id>, #/join) so the page works under any path.

import { bearer, setBearer } from "./api";
import { $, input } from "./dom";
import * as history from "./history";
import * as rooms from "./rooms";
import * as join from "./join";

interface Page {
  start(): void;
  stop(): void;
}

const pages: Record<string, { page: Page; section: string; nav: string }> = {
  rooms: { page: rooms, section: "#page-rooms", nav: "#nav-rooms" },
  history: { page: history, section: "#page-history", nav: "#nav-history" },
  join: { page: join, section: "#page-join", nav: "#nav-join" },
};

let current: string | null = null;

/** "#/rooms/standup" -> ["rooms", "standup"]; "#/join" -> ["join", null]. */
function parse(hash: string): [string, string | null] {
  const path = hash.replace(/^#\/?/, "");
  const slash = path.indexOf("/");
  const name = slash < 0 ? path : path.slice(0, slash);
  let rest: string | null = null;
  if (slash >= 0 && path.length > slash + 1) {
    try {
      rest = decodeURIComponent(path.slice(slash + 1));
    } catch {
      rest = path.slice(slash + 1);
    }
  }
  return name in pages ? [name, rest] : ["rooms", null];
}

function route(): void {
  const [next, room] = parse(location.hash);
  // A room's page is the rooms page with that room open.
  if (next === "rooms") rooms.open(room);
  // A session's page is the history page with that session open.
  if (next === "history") history.open(room);
  if (next === current) return;
  if (current) {
    pages[current].page.stop();
    $(pages[current].section).hidden = true;
    $(pages[current].nav).removeAttribute("aria-current");
  }
  current = next;
  $(pages[next].section).hidden = false;
  $(pages[next].nav).setAttribute("aria-current", "page");
  if (next !== "history") {
    document.title =
      next === "join" ? "RoomControl · Join a call" : room ? `RoomControl · Room ${room}` : "RoomControl · Rooms";
  }
  pages[next].page.start();
}

function showBearerState(): void {
  const set = bearer() !== "";
  $("#bearer-state").textContent = set
    ? "sent with every call (kept in this tab only)"
    : "none: calls are unauthenticated";
  $("#bearer-forget").hidden = !set;
}

function initAuth(): void {
  const field = input("#bearer");
  field.value = bearer();
  showBearerState();
  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setBearer(field.value);
    field.value = bearer();
    showBearerState();
    rooms.credentialsChanged();
    history.credentialsChanged();
    join.credentialsChanged();
  });
  $("#bearer-forget").addEventListener("click", () => {
    setBearer("");
    field.value = "";
    showBearerState();
    rooms.credentialsChanged();
    history.credentialsChanged();
    join.credentialsChanged();
  });
}

rooms.init();
history.init();
join.init();
initAuth();
window.addEventListener("hashchange", route);
route();
