// The page: the device token, the main button, push-to-talk, the text box, and the
// history. Counters for tests and the curious are kept as data-* attributes on <body>.

import { createApi } from "./api.js";
import { Transcript } from "./chat.js";
import { Conversation } from "./conversation.js";
import { History } from "./history.js";

const TOKEN_KEY = "voxrelay.token";
const $ = (id) => document.getElementById(id);

const tokenInput = $("token");
const mainButton = $("main");
const talkButton = $("talk");
const statusLine = $("status");
const textInput = $("text");
const sendButton = $("send");
const transcript = new Transcript($("log"));
const api = createApi(() => tokenInput.value.trim());
let conversation = null;

function readToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    localStorage.setItem(TOKEN_KEY, fromHash);
    // Not left in the address bar or the history.
    history.replaceState(null, "", location.pathname + location.search);
  }
  tokenInput.value = fromHash || localStorage.getItem(TOKEN_KEY) || "";
}

function setState(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
  document.body.dataset.state = state;
}

const view = {
  state: setState,
  transcript,
  level: (value) => {
    $("level").value = value;
  },
  microphone: (on) => {
    $("level-box").hidden = !on;
  },
  live: (which) => {
    // The session exists: typed turns may go (the microphone may still be asked for).
    document.body.dataset.conversationId = which.conversationId;
    textInput.disabled = sendButton.disabled = false;
  },
  lastEventId: (id) => {
    document.body.dataset.lastEventId = String(id);
  },
  stats: (stats) => {
    const body = document.body.dataset;
    body.events = stats.events;
    body.duplicateEvents = stats.duplicates;
    body.audioChunks = stats.chunks;
    body.audioStalls = stats.stalls;
    body.audioSoundFrames = stats.sound;
    body.uploads = stats.uploads;
    body.streamErrors = stats.reconnects;
  },
  ended: (which) => {
    if (which !== conversation) return;
    conversation = null;
    showIdle();
    historyView.refresh();
  },
};

function showIdle() {
  mainButton.textContent = "Start conversation";
  talkButton.hidden = true;
  $("talk-help").hidden = true;
  $("modes").disabled = false;
  textInput.disabled = sendButton.disabled = true;
}

async function start() {
  if (!tokenInput.value.trim()) {
    setState("error", "Error: enter a device token first");
    tokenInput.focus();
    return;
  }
  const pushToTalk = document.querySelector('input[name="mode"]:checked').value === "push-to-talk";
  // Made within the click: only a user's gesture may start sound.
  const context = new AudioContext({ latencyHint: "interactive" });
  context.resume();
  transcript.clear();
  const current = new Conversation({ api, context, pushToTalk, view });
  conversation = current;
  mainButton.textContent = "End conversation";
  $("modes").disabled = true;
  talkButton.hidden = $("talk-help").hidden = !pushToTalk;
  try {
    await current.start();
  } catch (error) {
    current.failed(error);
  }
}

mainButton.addEventListener("click", () => {
  if (conversation) conversation.end();
  else start();
});

// Push to talk: held with the pointer, or with Space or Enter while the button has focus.
const press = (event) => {
  event.preventDefault();
  if (conversation) {
    talkButton.setAttribute("aria-pressed", "true");
    conversation.press();
  }
};
const release = () => {
  if (talkButton.getAttribute("aria-pressed") !== "true") return;
  talkButton.setAttribute("aria-pressed", "false");
  if (conversation) conversation.release();
};
talkButton.addEventListener("pointerdown", (event) => {
  talkButton.setPointerCapture(event.pointerId);
  press(event);
});
talkButton.addEventListener("pointerup", release);
talkButton.addEventListener("pointercancel", release);
talkButton.addEventListener("keydown", (event) => {
  if ((event.key === " " || event.key === "Enter") && !event.repeat) press(event);
  else if (event.key === " " || event.key === "Enter") event.preventDefault();
});
talkButton.addEventListener("keyup", (event) => {
  if (event.key === " " || event.key === "Enter") {
    event.preventDefault();
    release();
  }
});
talkButton.addEventListener("blur", release);
talkButton.addEventListener("click", (event) => event.preventDefault());

$("text-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (!text || !conversation) return;
  textInput.value = "";
  try {
    await conversation.say(text);
  } catch (error) {
    textInput.value = text;
    setState("error", `Error: ${error.message}`);
  }
});

$("token-form").addEventListener("submit", (event) => event.preventDefault());
tokenInput.addEventListener("change", () => {
  const token = tokenInput.value.trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  historyView.refresh();
});

document.addEventListener("securitypolicyviolation", () => {
  document.body.dataset.cspViolations = String(Number(document.body.dataset.cspViolations || 0) + 1);
});

const historyView = new History(
  api,
  {
    refresh: $("refresh"),
    list: $("conversations"),
    note: $("history-note"),
    detail: $("detail"),
    back: $("back"),
    title: $("detail-title"),
    messages: $("detail-messages"),
    toolsBox: $("detail-tools"),
    tools: $("detail-tools-list"),
    usageBox: $("detail-usage"),
    usage: $("detail-usage-list"),
    remove: $("delete"),
    dialog: $("confirm-delete"),
    cancel: $("confirm-cancel"),
    ok: $("confirm-ok"),
  },
  { announce: (text) => setState(conversation ? statusLine.dataset.state : "idle", text) },
);

readToken();
showIdle();
if (tokenInput.value) historyView.refresh();
else $("history-note").textContent = "Enter a device token to see your conversations.";
document.body.dataset.ready = "true";
