// Past conversations: the list, one conversation with its messages (and its tool
// calls and usage where the server keeps them), and deleting one after a confirmation.

import { bubble } from "./chat.js";

const USAGE = [
  ["inputTokens", "Input tokens"],
  ["outputTokens", "Output tokens"],
  ["inputAudioTokens", "Input audio tokens"],
  ["inputTextTokens", "Input text tokens"],
  ["inputCachedTokens", "Input cached tokens"],
  ["outputAudioTokens", "Output audio tokens"],
  ["outputTextTokens", "Output text tokens"],
  ["audioInSeconds", "Audio in (s)"],
  ["audioOutSeconds", "Audio out (s)"],
  ["responses", "Responses"],
  ["cost", "Cost"],
];

export class History {
  constructor(api, elements, { announce }) {
    this.api = api;
    this.el = elements;
    this.announce = announce;
    this.openId = null;
    elements.refresh.addEventListener("click", () => this.refresh());
    elements.back.addEventListener("click", () => this.showList());
    elements.remove.addEventListener("click", () => this.confirmDelete());
    elements.cancel.addEventListener("click", () => elements.dialog.close("cancel"));
    elements.ok.addEventListener("click", () => elements.dialog.close("delete"));
    elements.dialog.addEventListener("close", () => this.confirmed(elements.dialog.returnValue));
  }

  async refresh() {
    const { list, note } = this.el;
    try {
      const { conversations } = await this.api.conversations();
      list.replaceChildren(...conversations.map((c) => this.item(c)));
      note.textContent = conversations.length ? "" : "No conversations yet.";
    } catch (error) {
      note.textContent = `Could not load the conversations: ${error.message}`;
    }
  }

  item(summary) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.id = summary.id;
    const when = document.createElement("span");
    when.className = "when";
    const count = summary.messageCount === 1 ? "1 message" : `${summary.messageCount} messages`;
    when.textContent = `${formatTime(summary.updatedAt || summary.createdAt)} · ${count}`;
    const last = document.createElement("span");
    last.className = "last";
    last.dir = "auto";
    last.textContent = summary.lastMessage ? summary.lastMessage.text : "(no messages)";
    button.append(when, last);
    button.setAttribute("aria-label", `Conversation of ${when.textContent}: ${last.textContent}`);
    button.addEventListener("click", () => this.open(summary.id));
    li.append(button);
    return li;
  }

  async open(id) {
    const { detail, list, title, messages } = this.el;
    let conversation;
    try {
      ({ conversation } = await this.api.conversation(id));
    } catch (error) {
      this.el.note.textContent = `Could not open the conversation: ${error.message}`;
      return;
    }
    this.openId = id;
    title.textContent = `Conversation of ${formatTime(conversation.createdAt)}`;
    messages.replaceChildren(...conversation.messages.map((m) => bubble(m.role, m.text, { itemId: m.id })));
    if (!conversation.messages.length) messages.textContent = "No messages.";
    this.showTools(conversation.toolCalls);
    this.showUsage(conversation.usage);
    list.hidden = true;
    this.el.note.hidden = true;
    detail.hidden = false;
    title.focus();
  }

  showTools(calls) {
    const { toolsBox, tools } = this.el;
    toolsBox.hidden = !Array.isArray(calls) || calls.length === 0;
    if (toolsBox.hidden) return;
    tools.replaceChildren(
      ...calls.map((call) => {
        const li = document.createElement("li");
        const head = document.createElement("strong");
        head.textContent = `${call.name} (${call.status}${call.runBy ? `, run by the ${call.runBy}` : ""})`;
        const args = document.createElement("pre");
        args.textContent = `arguments: ${JSON.stringify(call.arguments, null, 1)}`;
        const out = document.createElement("pre");
        out.textContent = call.error ? `error: ${call.error}` : `output: ${JSON.stringify(call.output, null, 1)}`;
        li.append(head, args, out);
        return li;
      }),
    );
  }

  showUsage(usage) {
    const { usageBox, usage: list } = this.el;
    usageBox.hidden = !usage || typeof usage !== "object";
    if (usageBox.hidden) return;
    const rows = [];
    for (const [key, label] of USAGE) {
      if (usage[key] === undefined || usage[key] === null) continue;
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = typeof usage[key] === "number" ? formatNumber(usage[key]) : String(usage[key]);
      rows.push(dt, dd);
    }
    list.replaceChildren(...rows);
  }

  showList() {
    this.openId = null;
    this.el.detail.hidden = true;
    this.el.list.hidden = false;
    this.el.note.hidden = false;
    const first = this.el.list.querySelector("button");
    (first || this.el.refresh).focus();
  }

  confirmDelete() {
    if (!this.openId) return;
    this.el.dialog.returnValue = "";
    this.el.dialog.showModal();
    this.el.cancel.focus();
  }

  async confirmed(answer) {
    if (answer !== "delete" || !this.openId) {
      this.el.remove.focus();
      return;
    }
    const id = this.openId;
    try {
      await this.api.deleteConversation(id);
      this.announce("Conversation deleted");
    } catch (error) {
      this.announce(`Could not delete the conversation: ${error.message}`);
      return;
    }
    await this.refresh();
    this.showList();
  }
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}
