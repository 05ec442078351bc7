// Chat bubbles. Text is always set as text (never as markup), and each bubble takes
// its direction from its own text (dir="auto"), so Hebrew or Arabic reads right to left.

const WHO = { user: "You", assistant: "Assistant" };

export function bubble(role, text, { final = true, itemId = null } = {}) {
  const turn = document.createElement("div");
  turn.className = `turn ${role === "user" ? "user" : "assistant"}`;
  turn.dataset.role = role;
  turn.dataset.final = String(final);
  if (itemId) turn.dataset.itemId = itemId;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = WHO[role] || role;
  const body = document.createElement("p");
  body.className = "bubble";
  body.dir = "auto";
  body.textContent = text;
  turn.append(who, body);
  return turn;
}

export function note(text) {
  const line = document.createElement("p");
  line.className = "note";
  line.dir = "auto";
  line.textContent = text;
  return line;
}

// The live transcript: one bubble per (role, item), grown by deltas, settled by the final text.
export class Transcript {
  constructor(container) {
    this.container = container;
    this.turns = new Map();
  }

  clear() {
    this.turns.clear();
    this.container.replaceChildren();
  }

  // A bubble for a turn that has begun (the user started speaking), so turns keep
  // the order in which they began even when a transcript arrives late.
  begin(role, itemId) {
    return this.turn(role, itemId);
  }

  delta(role, itemId, text) {
    const turn = this.turn(role, itemId);
    if (turn.dataset.final === "true") return;
    const body = turn.querySelector(".bubble");
    body.textContent = body.textContent === "…" ? text.trimStart() : body.textContent + text;
    this.scroll();
  }

  // A second final text for a turn is the answer cut to what the user heard
  // before they spoke over it: shown as such.
  final(role, itemId, text) {
    const turn = this.turn(role, itemId);
    const body = turn.querySelector(".bubble");
    const cut = turn.dataset.final === "true" && role === "assistant" && body.textContent !== text;
    if (!text && !cut) {
      turn.remove();
      this.turns.delete(`${role}:${itemId}`);
      return;
    }
    body.textContent = text;
    turn.dataset.final = "true";
    if (cut) this.mark(turn);
    this.scroll();
  }

  // The user spoke over this answer: it shows as interrupted (its text follows as
  // far as it was heard).
  interrupted(itemId) {
    const turn = this.turns.get(`assistant:${itemId}`);
    if (turn) this.mark(turn);
  }

  mark(turn) {
    turn.dataset.interrupted = "true";
    turn.querySelector(".who").textContent = `${WHO[turn.dataset.role] || turn.dataset.role} (interrupted)`;
  }

  note(text) {
    this.container.append(note(text));
    this.scroll();
  }

  turn(role, itemId) {
    const key = `${role}:${itemId}`;
    let turn = this.turns.get(key);
    if (!turn) {
      turn = bubble(role, "…", { final: false, itemId });
      this.turns.set(key, turn);
      this.container.append(turn);
      this.scroll();
    }
    return turn;
  }

  scroll() {
    this.container.scrollTop = this.container.scrollHeight;
  }
}
