// The console's only script (Content-Security-Policy: no inline script). Two jobs:
// follow a task's progress over server-sent events, and show the idle sign-out when the
// server's idle time has passed since this page was loaded (the server enforces it anyway).
"use strict";

function followTask(box) {
  const url = box.dataset.events;
  if (!url) return;
  const source = new EventSource(url);
  const set = (id, text) => { document.getElementById(id).textContent = text; };
  source.addEventListener("progress", (event) => {
    const s = JSON.parse(event.data);
    const state = document.getElementById("task-state");
    state.textContent = s.state;
    state.className = "state " + s.state;
    set("task-label", s.label);
    set("task-seconds", s.seconds);
    const bar = document.getElementById("task-progress");
    bar.max = s.total || 1;
    bar.value = s.total ? s.done : 0;
    set("task-amount", s.done + (s.total ? " of " + s.total : "") + " " + s.unit);
    const lines = document.getElementById("task-lines");
    lines.replaceChildren(...s.lines.map((line) => {
      const item = document.createElement("li");
      item.textContent = line;
      return item;
    }));
    const link = document.getElementById("task-link");
    link.replaceChildren();
    if (s.link) {
      const a = document.createElement("a");
      a.href = s.link[1];
      a.textContent = s.link[0];
      link.append(a);
    }
  });
  source.addEventListener("end", () => source.close());
  source.addEventListener("signed-out", () => {
    source.close();
    window.location.assign("/login?expired=1");
  });
  source.onerror = () => source.close();
}

function idleSignOut() {
  const seconds = Number(document.body.dataset.idleSeconds || 0);
  if (!seconds) return;
  // A second past the server's limit: the next request finds the session gone.
  window.setTimeout(() => { window.location.assign("/login?expired=1"); }, (seconds + 1) * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("task");
  if (box) followTask(box);
  idleSignOut();
});
