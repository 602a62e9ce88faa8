// The console's shell: the bearer token field and the two pages, chosen by
// the URL's fragment (#/rooms, #/join) so the page works under any path.

import { bearer, setBearer } from "./api";
import { $, input } from "./dom";
import * as rooms from "./rooms";
import * as join from "./join";

interface Page {
  start(): void;
  stop(): void;
}

const pages: Record<string, { page: Page; section: string; nav: string }> = {
  rooms: { page: rooms, section: "#page-rooms", nav: "#nav-rooms" },
  join: { page: join, section: "#page-join", nav: "#nav-join" },
};

let current: string | null = null;

function route(): void {
  const name = location.hash.replace(/^#\/?/, "") || "rooms";
  const next = name in pages ? name : "rooms";
  if (next === current) return;
  if (current) {
    pages[current].page.stop();
    $(pages[current].section).hidden = true;
    $(pages[current].nav).removeAttribute("aria-current");
  }
  current = next;
  $(pages[next].section).hidden = false;
  $(pages[next].nav).setAttribute("aria-current", "page");
  document.title = `RoomControl · ${next === "rooms" ? "Rooms" : "Join a call"}`;
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
    join.credentialsChanged();
  });
  $("#bearer-forget").addEventListener("click", () => {
    setBearer("");
    field.value = "";
    showBearerState();
    rooms.credentialsChanged();
    join.credentialsChanged();
  });
}

rooms.init();
join.init();
initAuth();
window.addEventListener("hashchange", route);
route();
